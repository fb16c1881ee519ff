// Small helpers every page shares: element building, formatting, the status list and bars.

import { STATUSES } from './statuses.js';

export { DONE, STATUSES } from './statuses.js';

export const settings = document.getElementById('app').dataset;

/** h('a', {href: '/'}, 'text', child): an element; attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function fmtTime(ts) {
  if (ts === null || ts === undefined) return '';
  return new Date(ts * 1000).toLocaleString();
}

export function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return '—';
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  if (m < 60) return `${m} min ${sec} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

export function fmtBytes(b) {
  if (b === null || b === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i && b < 10 ? 1 : 0)} ${units[i]}`;
}

export const fmtInt = (n) => (n ?? 0).toLocaleString();

export function pill(status) {
  return h('span', { class: `pill st-${status}`, 'data-status': status }, status);
}

/** A bar of segments by status; update it in place with setBar. */
export function bar(big = false) {
  const el = h('div', { class: big ? 'bar big' : 'bar', role: 'img' });
  for (const s of STATUSES) el.append(h('span', { class: `st-${s}`, 'data-status': s, style: 'width:0' }));
  return el;
}

export function setBar(el, counts, total) {
  const parts = [];
  for (const seg of el.children) {
    const n = counts[seg.dataset.status] || 0;
    seg.style.width = total ? `${(100 * n) / total}%` : '0';
    seg.title = `${seg.dataset.status}: ${n.toLocaleString()}`;
    if (n) parts.push(`${seg.dataset.status} ${n}`);
  }
  el.setAttribute('aria-label', parts.join(', ') || 'no jobs');
}

export function toast(text, kind = 'info') {
  const box = document.getElementById('toasts');
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  box.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

export function setConn(state) {
  const el = document.getElementById('conn');
  el.className = `conn ${state}`;
  el.textContent = { live: 'live', connecting: 'connecting', reconnecting: 'reconnecting' }[state] || state;
  el.dataset.state = state;
}

/** A confirmation in the page (not window.confirm): resolves true on the action button. */
export function confirmModal(title, text, action, danger = true) {
  return new Promise((resolve) => {
    const done = (v) => { back.remove(); resolve(v); };
    const back = h('div', { class: 'modal-back', onclick: (e) => { if (e.target === back) done(false); } },
      h('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true' },
        h('h2', {}, title), h('p', {}, text),
        h('div', { class: 'buttons' },
          h('button', { onclick: () => done(false) }, 'Keep going'),
          h('button', { class: danger ? 'danger' : 'primary', 'data-confirm': '1', onclick: () => done(true) }, action))));
    document.body.append(back);
    back.querySelector('[data-confirm]').focus();
  });
}

export function showWho() {
  const who = document.getElementById('who');
  if (settings.user) who.textContent = settings.user;
  else if (settings.authMode === 'optional') who.append(h('a', { href: '/login' }, 'Sign in'));
}
