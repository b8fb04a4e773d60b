// The account view: balance and suspension warning, personal keys (created
// once-shown, deleted, archived while in a team), teams, create a team.
import { get, post, put, del, enc } from './api.js';
import { h, field, form, flash, act, money, day, secretBox, table, stats } from './ui.js';
import { chart } from './chart.js';

// A limits object (Q1-Q3) as a line of text.
export function limitsText(l) {
  if (!l) return 'none';
  const parts = [];
  if (l.spend_limit !== null && l.spend_limit !== undefined) parts.push(`$${l.spend_limit} per ${l.period} (spent $${l.spent_in_period})`);
  if (l.rpm) parts.push(`${l.rpm} req/min`);
  if (l.tpm) parts.push(`${l.tpm} tokens/min`);
  return parts.length ? parts.join(', ') : 'none';
}

// The limits editor: PUT `path` with every field (an empty box clears it).
export function limitsEditor(l, path, withRates, done) {
  l = l || {};
  const submit = async (data) => {
    const num = (k) => { const v = String(data.get(k) || '').trim(); return v === '' ? null : Number(v); };
    const spend = String(data.get('spend_limit') || '').trim();
    const body = { spend_limit: spend === '' ? null : spend, period: String(data.get('period')) };
    if (withRates) { body.rpm = num('rpm'); body.tpm = num('tpm'); }
    await act(() => put(path, body), 'Limits saved.', done);
  };
  const periods = ['month', 'week', 'day', 'total'].map((p) => [p, p]);
  const f = form({ class: 'limits-form' }, submit,
    h('div', { class: 'row' },
      h('div', {}, ...field('Spend limit (USD, empty: none)', { type: 'text', name: 'spend_limit', inputmode: 'decimal', value: l.spend_limit ?? '' })),
      h('div', {}, ...field('Period', { tag: 'select', name: 'period', options: periods }))),
    withRates ? h('div', { class: 'row' },
      h('div', {}, ...field('Requests per minute', { type: 'number', name: 'rpm', min: 1, value: l.rpm ?? '' })),
      h('div', {}, ...field('Tokens per minute', { type: 'number', name: 'tpm', min: 1, value: l.tpm ?? '' }))) : null,
    h('button', { type: 'submit' }, 'Save limits'));
  const sel = f.querySelector('select[name=period]');
  if (l.period) sel.value = l.period;
  return h('details', {}, h('summary', {}, 'Edit limits'), f);
}

function balanceSection(user) {
  return h('section', { 'aria-labelledby': 'bal-h', id: 'balance' },
    h('h2', { id: 'bal-h' }, 'Balance'),
    user.suspended ? h('p', { class: 'warning', id: 'suspended-warning' },
      'Your personal balance is at or below the suspension threshold: requests with your personal keys are refused until you add funds.') : null,
    h('dl', { class: 'stats' },
      h('div', {}, h('dt', {}, 'Paid'), h('dd', { id: 'balance-paid' }, money(user.balance.paid))),
      h('div', {}, h('dt', {}, 'Promo'), h('dd', { id: 'balance-promo' }, money(user.balance.promo)))),
    h('p', { class: 'muted' }, 'Requests with personal keys draw promo first, then paid.'));
}

async function keysSection(user, reload) {
  const inTeam = user.teams.length > 0;
  const out = h('div', {});
  const list = h('div', {});
  const fill = async () => {
    const keys = await get('/api/keys');
    const rows = keys.map((k) => h('tr', {},
      h('td', {}, k.name), h('td', {}, h('code', {}, `${k.prefix}…`)),
      h('td', {}, k.status), h('td', {}, limitsText(k.limits)), h('td', {}, day(k.last_used_at)),
      h('td', {}, k.status === 'deleted' ? null :
        h('button', { type: 'button', class: 'danger', 'aria-label': `Delete key ${k.name}`, onclick: async () => {
          await act(() => del(`/api/keys/${enc(k.id)}`), 'Key deleted.', reload);
        } }, 'Delete'),
        k.status === 'active' ? limitsEditor(k.limits, `/api/keys/${enc(k.id)}/limits`, true, reload) : null)));
    list.replaceChildren(keys.length ? table(['Name', 'Prefix', 'Status', 'Limits', 'Last used', ''], rows, { id: 'personal-keys-table' }) : h('p', { class: 'muted' }, 'No personal keys.'));
  };
  await fill();
  const create = async (data, el) => {
    const k = await act(() => post('/api/keys', { name: String(data.get('name')) }));
    if (k) { el.reset(); out.replaceChildren(secretBox(`Your new key "${k.name}"`, k.key)); await act(fill); }
  };
  return h('section', { 'aria-labelledby': 'keys-h', id: 'personal-keys' },
    h('h2', { id: 'keys-h' }, 'Personal API keys'),
    inTeam ? h('p', { class: 'warning' }, 'Your personal keys are archived while you belong to a team; use team keys. They are restored when you leave every team.') : null,
    out, list,
    inTeam ? null : form({ id: 'create-key-form' }, create,
      ...field('Key name', { type: 'text', name: 'name', required: true, maxlength: 48 }),
      h('button', { type: 'submit' }, 'Create key')));
}

function teamsSection(user, reload) {
  const create = async (data) => {
    const t = await act(() => post('/api/teams', { name: String(data.get('name')) }));
    if (t) { flash(`Team "${t.name}" created; your paid balance moved to it.`, 'ok', true); location.hash = `#/teams/${enc(t.id)}`; }
  };
  return h('section', { 'aria-labelledby': 'teams-h', id: 'teams' },
    h('h2', { id: 'teams-h' }, 'Teams'),
    user.teams.length ? h('ul', {}, user.teams.map((t) => h('li', {},
      h('a', { href: `/#/teams/${enc(t.id)}` }, t.name), ` (${t.role})`))) : h('p', { class: 'muted' }, 'You belong to no team.'),
    user.owned_team_id ? null : h('div', {},
      h('h3', {}, 'Create a team'),
      h('p', { class: 'muted' }, 'Your paid balance moves to the team wallet (one-way; deleting the team refunds it). Your promo balance stays personal.'),
      form({ id: 'create-team-form' }, create,
        ...field('Team name (up to 48 characters)', { type: 'text', name: 'name', required: true, maxlength: 48 }),
        h('button', { type: 'submit' }, 'Create Team'))));
}

// Personal keys' usage (team usage is on each team's page).
async function usageSection() {
  const u = await get('/api/me/usage?days=30');
  return h('section', { 'aria-labelledby': 'pu-h', id: 'personal-usage' },
    h('h2', { id: 'pu-h' }, 'Personal keys: usage, last 30 days'), stats(u),
    chart('Personal spend per day (USD)', [{ label: 'Spend', days: u.days }], 'spend'),
    h('a', { class: 'button secondary', href: '/api/me/usage?format=csv&days=30', download: 'my-usage.csv' }, 'Download CSV (30 days, with your team usage)'));
}

export async function homeView(user, reload) {
  return [
    h('h1', {}, 'Your account'),
    balanceSection(user),
    await keysSection(user, reload),
    teamsSection(user, reload),
    await usageSection(),
  ];
}
