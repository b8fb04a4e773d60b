// DOM helpers: elements are built with text nodes only (no innerHTML), so
// names and emails typed by users can never become markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let seq = 0;
export const uid = (p) => `${p}-${++seq}`;

// A labelled control: <label for> + the control.
export function field(label, attrs) {
  const id = attrs.id || uid('f');
  const tag = attrs.tag || 'input';
  const options = attrs.options;
  const a = { ...attrs, id };
  delete a.tag; delete a.options;
  const control = h(tag, a, ...(options || []).map(([v, t]) => h('option', { value: v }, t)));
  return [h('label', { for: id }, label), control];
}

// Money: the API's exact decimal string, shown as is with a dollar sign.
export const money = (s) => h('span', { class: 'money' }, s === null || s === undefined ? '—' : `$${s}`);

export const day = (t) => (t ? String(t).slice(0, 10) : '—');

// The message box. `keep`: the message survives the next navigation
// (an action that moves to another view reports there).
let keepOnce = false;
export function flash(text, kind = 'ok', keep = false) {
  const box = document.getElementById('flash');
  box.replaceChildren(text ? h('div', { class: kind }, text) : '');
  keepOnce = keep;
}

export function clearFlash() {
  if (keepOnce) { keepOnce = false; return; }
  flash('');
}

export function errorText(e) {
  return e && e.code ? `${e.message} (${e.code})` : String(e && e.message ? e.message : e);
}

// Run an action from a button or form; report its error in the flash box.
// On success `after` (a re-render) runs before `okText` is shown, so that
// the message appears on the page as it now is.
export async function act(fn, okText, after) {
  try {
    const r = await fn();
    if (after) await after();
    if (okText) flash(okText, 'ok');
    return r;
  } catch (e) {
    flash(errorText(e), 'error');
    return undefined;
  }
}

export function form(attrs, submit, ...children) {
  return h('form', {
    ...attrs,
    onsubmit: (ev) => { ev.preventDefault(); submit(new FormData(ev.target), ev.target); },
  }, ...children);
}

// A secret shown once: read-only text box + copy button (never in a URL).
export function secretBox(title, secret) {
  const id = uid('secret');
  const input = h('input', { id, type: 'text', class: 'secret', readonly: true, value: secret, 'data-secret': '1' });
  const copy = h('button', {
    type: 'button',
    onclick: async () => {
      input.select();
      try { await navigator.clipboard.writeText(secret); flash('Copied to the clipboard.'); }
      catch { document.execCommand && document.execCommand('copy'); }
    },
  }, 'Copy');
  requestAnimationFrame(() => input.isConnected && input.focus());
  return h('div', { class: 'warning', 'data-testid': 'new-secret' },
    h('label', { for: id }, title), input, copy,
    h('p', { class: 'muted' }, 'Shown only now: store it safely. It cannot be displayed again.'));
}

export function table(headers, rows, attrs) {
  return h('div', { class: 'table-wrap' }, h('table', attrs || {},
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col', class: /^(calls|tokens|spend|amount|paid|promo|input|output)/i.test(t) ? 'num' : null }, t)))),
    h('tbody', {}, rows)));
}

export function stats(s) {
  const item = (k, v) => h('div', {}, h('dt', {}, k), h('dd', {}, v));
  return h('dl', { class: 'stats' },
    item('Spend', money(s.spend)), item('Calls', s.calls), item('Total tokens', s.total_tokens),
    item('Input tokens', s.input_tokens), item('Cached tokens', s.cached_tokens), item('Output tokens', s.output_tokens));
}
