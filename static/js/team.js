// The team view: overview (the Owner's balance and warning), members and
// roles, invites, team keys, limits, leave, delete. What a role cannot do
// is not shown (the role table of SPEC.md, as accounts/rules.rs has it);
// the API refuses it anyway.
import { get, post, patch, del, enc } from './api.js';
import { h, field, form, flash, act, money, day, secretBox, table } from './ui.js';
import { limitsEditor, limitsText } from './home.js';

export const can = {
  invite: (r) => r === 'owner' || r === 'admin',
  inviteAs: (r) => (r === 'owner' ? ['member', 'admin'] : ['member']),
  remove: (r, t) => t !== 'owner' && (r === 'owner' || (r === 'admin' && t === 'member')),
  changeRole: (r, t) => r === 'owner' && t !== 'owner',
  manageKeys: (r) => r === 'owner' || r === 'admin',
  memberLimits: (r, t) => r === 'owner' || (r === 'admin' && t === 'member'),
  billing: (r) => r === 'owner',
  teamUsage: (r) => r === 'owner' || r === 'admin',
  deleteTeam: (r) => r === 'owner',
};

export function tabs(team, current) {
  const tab = (href, name, key) => h('a', { href, 'aria-current': current === key ? 'page' : null }, name);
  const base = `/#/teams/${enc(team.id)}`;
  return h('nav', { class: 'tabs', 'aria-label': 'Team' },
    tab(base, 'Team', 'team'), tab(`${base}/usage`, 'Usage', 'usage'),
    can.billing(team.role) ? tab(`${base}/ledger`, 'Ledger', 'ledger') : null);
}

export function teamHeader(team, current) {
  return [
    h('h1', {}, team.name, h('span', { class: 'muted' }, ` · your role: ${team.role}`)),
    tabs(team, current),
    team.warning ? h('p', { class: 'warning', id: 'team-warning' }, team.warning)
      : (team.suspended ? h('p', { class: 'warning', id: 'team-warning' }, 'This team is suspended: its keys are refused until the Owner adds funds.') : null),
  ];
}

function overview(team) {
  return h('section', { 'aria-labelledby': 'ov-h' },
    h('h2', { id: 'ov-h' }, 'Overview'),
    h('dl', { class: 'stats' },
      h('div', {}, h('dt', {}, 'Members'), h('dd', {}, team.member_count)),
      h('div', {}, h('dt', {}, 'Created'), h('dd', {}, day(team.created_at))),
      can.billing(team.role) ? h('div', {}, h('dt', {}, 'Team balance'), h('dd', { id: 'team-balance' }, money(team.balance))) : null));
}

function memberRow(team, m, user, reload) {
  const r = team.role;
  const self = m.user_id === user.id;
  const path = `/api/teams/${enc(team.id)}/members/${enc(m.user_id)}`;
  const roleCell = can.changeRole(r, m.role) ? h('span', {},
    ...field(`Role of ${m.email}`, { tag: 'select', name: 'role', options: [['member', 'member'], ['admin', 'admin']], 'data-role-for': m.email }),
    h('button', { type: 'button', class: 'secondary', onclick: async (ev) => {
      const role = ev.target.parentElement.querySelector('select').value;
      await act(() => patch(path, { role }), `${m.email} is now ${role}.`, reload);
    } }, 'Change role')) : m.role;
  if (roleCell instanceof Node) {
    roleCell.querySelector('label').className = 'sr-only';
    roleCell.querySelector('select').value = m.role;
  }
  const actions = [];
  if (self && r !== 'owner') {
    actions.push(h('button', { type: 'button', class: 'danger', id: 'leave-team', onclick: async () => {
      if (await act(() => del(path)) !== undefined) { flash(`You left ${team.name}.`, 'ok', true); location.hash = '#/'; }
    } }, 'Leave team'));
  } else if (!self && can.remove(r, m.role)) {
    actions.push(h('button', { type: 'button', class: 'danger', 'aria-label': `Remove ${m.email}`, onclick: async () => {
      await act(() => del(path), `${m.email} removed.`, reload);
    } }, 'Remove'));
  }
  if (can.memberLimits(r, m.role)) actions.push(limitsEditor(m.limits, `${path}/limits`, false, reload));
  return h('tr', { 'data-member': m.email },
    h('td', {}, m.email, self ? ' (you)' : ''), h('td', {}, roleCell), h('td', {}, day(m.joined_at)),
    h('td', {}, m.limits ? limitsText(m.limits) : '—'), h('td', {}, actions));
}

async function membersSection(team, user, reload) {
  const members = await get(`/api/teams/${enc(team.id)}/members`);
  return [members, h('section', { 'aria-labelledby': 'mem-h', id: 'members' },
    h('h2', { id: 'mem-h' }, 'Members'),
    table(['Member', 'Role', 'Joined', 'Spend limit', ''], members.map((m) => memberRow(team, m, user, reload)), { id: 'members-table' }))];
}

async function invitesSection(team, reload) {
  if (!can.invite(team.role)) return null;
  const base = `/api/teams/${enc(team.id)}/invites`;
  const invites = await get(base);
  const sent = h('div', {});
  const submit = async (data, el) => {
    const body = { email: String(data.get('email')), role: String(data.get('role') || 'member') };
    const inv = await act(() => post(base, body));
    if (inv) {
      el.reset();
      await reload();
      flash(`Invitation sent to ${inv.email}.`);
    }
  };
  const roles = can.inviteAs(team.role);
  return h('section', { 'aria-labelledby': 'inv-h', id: 'invites' },
    h('h2', { id: 'inv-h' }, 'Invite members'),
    sent,
    form({ id: 'invite-form' }, submit,
      h('div', { class: 'row' },
        h('div', {}, ...field('Email address', { type: 'email', name: 'email', required: true })),
        roles.length > 1 ? h('div', {}, ...field('Role', { tag: 'select', name: 'role', options: roles.map((x) => [x, x]) })) : null),
      h('button', { type: 'submit' }, 'Send Invite')),
    h('h3', {}, 'Pending invites'),
    invites.length ? table(['Email', 'Role', 'Expires', ''], invites.map((i) => h('tr', {},
      h('td', {}, i.email), h('td', {}, i.role), h('td', {}, day(i.expires_at)),
      h('td', {}, h('button', { type: 'button', class: 'secondary', 'aria-label': `Revoke the invite of ${i.email}`, onclick: async () => {
        await act(() => del(`${base}/${enc(i.id)}`), 'Invite revoked.', reload);
      } }, 'Revoke')))), { id: 'invites-table' }) : h('p', { class: 'muted' }, 'No pending invites.'));
}

async function keysSection(team, members, reload) {
  const base = `/api/teams/${enc(team.id)}/keys`;
  const manage = can.manageKeys(team.role);
  const emailOf = (id) => (members.find((m) => m.user_id === id) || {}).email || (id ? 'a former member' : '—');
  const out = h('div', {});
  const list = h('div', {});
  const fill = async () => {
    const keys = await get(base);
    const rows = keys.map((k) => h('tr', { 'data-key': k.name },
      h('td', {}, k.name), h('td', {}, h('code', {}, `${k.prefix}…`)), h('td', {}, emailOf(k.member_id)),
      h('td', {}, k.status), h('td', {}, limitsText(k.limits)), h('td', {}, day(k.last_used_at)),
      h('td', {}, manage && k.status !== 'deleted' ? [
        h('button', { type: 'button', class: 'danger', 'aria-label': `Delete key ${k.name}`, onclick: async () => {
          await act(() => del(`${base}/${enc(k.id)}`), 'Key deleted.', reload);
        } }, 'Delete'),
        limitsEditor(k.limits, `${base}/${enc(k.id)}/limits`, true, reload)] : null)));
    list.replaceChildren(keys.length ? table(['Name', 'Prefix', 'Assigned to', 'Status', 'Limits', 'Last used', ''], rows, { id: 'team-keys-table' }) : h('p', { class: 'muted' }, 'No team keys.'));
  };
  await fill();
  const create = async (data, el) => {
    const member = String(data.get('member_id') || '');
    const body = { name: String(data.get('name')) };
    if (member) body.member_id = member;
    const k = await act(() => post(base, body));
    if (k) { el.reset(); out.replaceChildren(secretBox(`The new team key "${k.name}"`, k.key)); await act(fill); }
  };
  return h('section', { 'aria-labelledby': 'tk-h', id: 'team-keys' },
    h('h2', { id: 'tk-h' }, manage ? 'Team API keys' : 'Your team API keys'),
    out, list,
    manage ? form({ id: 'team-key-form' }, create,
      h('div', { class: 'row' },
        h('div', {}, ...field('Key name', { type: 'text', name: 'name', required: true, maxlength: 48 })),
        h('div', {}, ...field('Assign to member', { tag: 'select', name: 'member_id', options: [['', 'nobody (team-wide)'], ...members.map((m) => [m.user_id, m.email])] }))),
      h('button', { type: 'submit' }, 'Create team key')) : null);
}

function deleteSection(team) {
  if (!can.deleteTeam(team.role)) return null;
  const box = h('div', {});
  const confirmDelete = async () => {
    const r = await act(() => del(`/api/teams/${enc(team.id)}`));
    if (r) {
      flash(`Team "${team.name}" deleted. Refunded to your personal paid balance: $${r.refunded}.`, 'ok', true);
      location.hash = '#/';
    }
  };
  const ask = () => {
    box.replaceChildren(h('div', { class: 'warning', role: 'alertdialog', 'aria-labelledby': 'del-q' },
    h('p', { id: 'del-q' }, `Delete "${team.name}"? Its remaining balance, $${team.balance}, is refunded to your personal paid balance; members lose access and every team key is deleted. This cannot be undone.`),
    h('button', { type: 'button', class: 'danger', id: 'confirm-delete', onclick: confirmDelete }, 'Delete the team and refund'),
    h('button', { type: 'button', class: 'secondary', onclick: () => box.replaceChildren() }, 'Cancel')));
    box.querySelector('#confirm-delete').focus();
  };
  return h('section', { 'aria-labelledby': 'del-h', id: 'delete-team' },
    h('h2', { id: 'del-h' }, 'Delete the team'),
    h('button', { type: 'button', class: 'danger', id: 'delete-team-button', onclick: ask }, 'Delete team…'),
    box);
}

export async function teamView(id, user, reload) {
  const team = await get(`/api/teams/${enc(id)}`);
  const [members, membersNode] = await membersSection(team, user, reload);
  return [
    ...teamHeader(team, 'team'),
    overview(team),
    membersNode,
    await invitesSection(team, reload),
    await keysSection(team, members, reload),
    deleteSection(team),
  ];
}
