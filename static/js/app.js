// The dashboard's entry: who is signed in, which view the location names,
// the sign-up / sign-in / sign-out and invite-accept views.
//   /#/                 account: balance, personal keys, teams, create team
//   /#/signin, /#/signup
//   /#/teams/{id}       members, invites, team keys, limits, delete/leave
//   /#/teams/{id}/usage usage by member and key (own usage for a Member)
//   /#/teams/{id}/ledger the team wallet's ledger (Owner)
//   /invites/{token}    the emailed link: accept the invite
import { get, post, del, enc, ApiError } from './api.js';
import { h, field, form, flash, clearFlash, act, errorText } from './ui.js';
import { homeView } from './home.js';
import { teamView } from './team.js';
import { usageView, ledgerView } from './usage.js';

const main = document.getElementById('main');

export function show(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
}

async function me() {
  try { return await get('/api/me'); } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

function nav(user) {
  const n = document.getElementById('nav');
  if (!user) {
    n.replaceChildren(h('a', { href: '/#/signin' }, 'Sign in'), h('a', { href: '/#/signup' }, 'Sign up'));
    return;
  }
  n.replaceChildren(
    h('a', { href: '/#/' }, 'Account'),
    ...user.teams.map((t) => h('a', { href: `/#/teams/${enc(t.id)}` }, t.name)),
    h('span', { class: 'muted' }, user.email),
    h('button', { type: 'button', class: 'secondary', id: 'sign-out', onclick: signOut }, 'Sign out'),
  );
}

async function signOut() {
  await act(() => del('/api/sessions'));
  location.href = '/#/signin';
  route();
}

function authView(mode, after) {
  const up = mode === 'signup';
  const submit = async (data) => {
    const creds = { email: String(data.get('email')), password: String(data.get('password')) };
    const ok = await act(async () => {
      if (up) await post('/api/users', creds);
      await post('/api/sessions', creds);
      return true;
    });
    if (ok) { flash(''); after(); }
  };
  return h('section', { 'aria-labelledby': 'auth-h' },
    h('h1', { id: 'auth-h' }, up ? 'Create an account' : 'Sign in'),
    form({ id: up ? 'signup-form' : 'signin-form' }, submit,
      ...field('Email', { type: 'email', name: 'email', id: 'email', required: true, autocomplete: 'email' }),
      ...field('Password', { type: 'password', name: 'password', id: 'password', required: true, minlength: up ? 8 : null, autocomplete: up ? 'new-password' : 'current-password' }),
      up ? h('p', { class: 'muted' }, 'At least 8 characters.') : null,
      h('button', { type: 'submit' }, up ? 'Sign up' : 'Sign in')),
    h('p', {}, up ? h('a', { href: '#/signin' }, 'I have an account: sign in') : h('a', { href: '#/signup' }, 'New here? Create an account')));
}

function inviteView(token, user) {
  if (!user) {
    const mode = location.hash === '#/signup' ? 'signup' : 'signin';
    return [h('div', { class: 'warning' }, 'You were invited to a team. Sign in (or create an account with the invited email) to accept.'),
      authView(mode, route)];
  }
  const accept = async () => {
    const r = await act(() => post(`/api/invites/${enc(token)}/accept`));
    if (r) {
      flash(`You joined the team as ${r.role}.`);
      history.replaceState(null, '', `/#/teams/${enc(r.team_id)}`);
      route();
    }
  };
  return h('section', { 'aria-labelledby': 'inv-h' },
    h('h1', { id: 'inv-h' }, 'Team invitation'),
    h('p', {}, `Signed in as ${user.email}. Accepting moves your paid balance into the team wallet (one-way) and archives your personal keys while you are in the team.`),
    h('button', { type: 'button', id: 'accept-invite', onclick: accept }, 'Accept the invitation'),
    h('a', { class: 'button secondary', href: '/#/' }, 'Not now'));
}

export async function route() {
  let user;
  try { user = await me(); } catch (e) { show(h('p', { class: 'error' }, errorText(e))); return; }
  nav(user);
  const inv = location.pathname.match(/^\/invites\/([^/]+)$/);
  if (inv) { show(...[inviteView(decodeURIComponent(inv[1]), user)].flat()); return; }
  const path = (location.hash || '#/').slice(1);
  if (!user) {
    show(authView(path === '/signup' ? 'signup' : 'signin', () => { location.hash = '#/'; route(); }));
    return;
  }
  const t = path.match(/^\/teams\/([^/]+)(\/(usage|ledger))?$/);
  try {
    if (t) {
      const id = decodeURIComponent(t[1]);
      const view = t[3] === 'usage' ? usageView : t[3] === 'ledger' ? ledgerView : teamView;
      show(...[await view(id, user, route)].flat());
    } else {
      show(...[await homeView(user, route)].flat());
    }
  } catch (e) {
    show(h('p', { class: 'error' }, errorText(e)));
  }
  main.focus();
}

window.addEventListener('hashchange', () => { clearFlash(); route(); });
route();
