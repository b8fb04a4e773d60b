// Usage (30-day charts with uPlot, tables by member and by key, the CSV
// download) and the Owner's ledger. Tables show the API's exact money
// strings; only the charts turn them into numbers, to draw.
import { get, enc } from './api.js';
import { h, money, day, table, stats } from './ui.js';
import { can, teamHeader } from './team.js';
import { chart } from './chart.js';

function dailyTable(s) {
  return h('details', {}, h('summary', {}, 'Daily numbers'),
    table(['Date', 'Calls', 'Tokens', 'Spend'], s.days.filter((d) => d.calls > 0).map((d) => h('tr', {},
      h('td', {}, d.date), h('td', { class: 'num' }, d.calls), h('td', { class: 'num' }, d.total_tokens), h('td', { class: 'num' }, money(d.spend))))));
}

function statRow(name, s) {
  return h('tr', { 'data-row': name },
    h('td', {}, name), h('td', { class: 'num' }, s.calls), h('td', { class: 'num' }, s.input_tokens),
    h('td', { class: 'num' }, s.output_tokens), h('td', { class: 'num' }, s.total_tokens), h('td', { class: 'num' }, money(s.spend)));
}

const HEAD = ['Name', 'Calls', 'Input tokens', 'Output tokens', 'Tokens', 'Spend'];

export function csvLink(path) {
  return h('a', { class: 'button secondary', id: 'csv-download', href: `${path}?format=csv&days=30`, download: 'usage.csv' }, 'Download CSV (30 days)');
}

export async function usageView(id) {
  const team = await get(`/api/teams/${enc(id)}`);
  const head = teamHeader(team, 'usage');
  if (!can.teamUsage(team.role)) {
    const path = `/api/teams/${enc(id)}/usage/me`;
    const s = await get(`${path}?days=30`);
    return [...head, h('section', { 'aria-labelledby': 'u-h', id: 'my-usage' },
      h('h2', { id: 'u-h' }, 'Your usage, last 30 days'), stats(s),
      chart('Your spend per day (USD)', [{ label: 'You', days: s.days }], 'spend'),
      dailyTable(s), csvLink(path))];
  }
  const path = `/api/teams/${enc(id)}/usage`;
  const u = await get(`${path}?days=30`);
  const memberName = (m) => `${m.email || m.user_id}${m.left ? ' (left)' : ''}`;
  return [...head,
    h('section', { 'aria-labelledby': 'ut-h', id: 'team-usage' },
      h('h2', { id: 'ut-h' }, 'Team usage, last 30 days'), stats(u.total),
      chart('Team calls per day', [{ label: 'Calls', days: u.total.days }], 'calls'),
      dailyTable(u.total), csvLink(path)),
    h('section', { 'aria-labelledby': 'um-h', id: 'usage-by-member' },
      h('h2', { id: 'um-h' }, 'By member'),
      chart('Spend per day by member (USD)', u.by_member.map((m) => ({ label: memberName(m), days: m.days })), 'spend'),
      table(HEAD, u.by_member.map((m) => statRow(memberName(m), m)), { id: 'by-member-table' })),
    h('section', { 'aria-labelledby': 'uk-h', id: 'usage-by-key' },
      h('h2', { id: 'uk-h' }, 'By API key'),
      chart('Spend per day by key (USD)', u.by_key.map((k) => ({ label: k.name, days: k.days })), 'spend'),
      table(HEAD, u.by_key.map((k) => statRow(k.name, k)), { id: 'by-key-table' }))];
}

export async function ledgerView(id) {
  const team = await get(`/api/teams/${enc(id)}`);
  const head = teamHeader(team, 'ledger');
  if (!can.billing(team.role)) return [...head, h('p', {}, 'Only the Owner sees the team\'s billing.')];
  const entries = await get(`/api/teams/${enc(id)}/ledger`);
  return [...head, h('section', { 'aria-labelledby': 'l-h', id: 'ledger' },
    h('h2', { id: 'l-h' }, 'Team wallet ledger'),
    h('p', {}, 'Balance: ', money(team.balance)),
    entries.length ? table(['When', 'Kind', 'Amount', 'Paid', 'Promo', 'Reference'], entries.slice().reverse().map((e) => h('tr', {},
      h('td', {}, String(e.at).replace('T', ' ').slice(0, 19)), h('td', {}, e.kind), h('td', { class: 'num' }, money(e.amount)),
      h('td', { class: 'num' }, money(e.paid)), h('td', { class: 'num' }, money(e.promo)), h('td', {}, h('code', {}, e.reference)))), { id: 'ledger-table' })
      : h('p', { class: 'muted' }, 'No entries yet.'))];
}
