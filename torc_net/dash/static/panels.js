// The Nodes and Events tabs. Neither is on the feed message by message, so each is read again
// when the feed shows the workflow moving, at most every REFRESH_MS and only while visible.
import { getJson } from './api.js';
import { fmtBytes, fmtTime, h, toast } from './util.js';

const REFRESH_MS = 3000;

function refresher(load) {
  let last = 0, timer = null, visible = false;
  const run = () => { timer = null; last = Date.now(); load().catch((err) => toast(err.message, 'error')); };
  return {
    show() { visible = true; run(); },
    hide() { visible = false; },
    poke() {
      if (!visible || timer !== null) return;
      timer = setTimeout(run, Math.max(0, REFRESH_MS - (Date.now() - last)));
    },
  };
}

const table = (id, heads, rows, emptyText) => (rows.length
  ? h('table', { class: 'grid', id }, h('thead', {}, h('tr', {}, heads.map((t) => h('th', {}, t)))), h('tbody', {}, rows))
  : h('p', { class: 'muted', id }, emptyText));

export function nodesPanel(workflowId) {
  const el = h('div', { id: 'nodes' });
  const r = refresher(async () => {
    const [nodes, allocs] = await Promise.all([
      getJson(`/workflows/${workflowId}/compute_nodes`, { limit: 1000 }),
      getJson(`/workflows/${workflowId}/allocations`, { limit: 1000 }),
    ]);
    const now = Date.now() / 1000;
    el.replaceChildren(
      h('h2', {}, `Compute nodes (${nodes.total})`),
      table('node-table', ['ID', 'Host', 'PID', 'CPUs', 'Memory', 'GPUs', 'Slurm job', 'Started', 'Active', 'Lease', 'Running jobs'],
        nodes.items.map((n) => h('tr', {}, h('td', {}, n.id), h('td', {}, n.hostname), h('td', {}, n.pid ?? ''),
          h('td', {}, n.num_cpus ?? ''), h('td', {}, fmtBytes(n.memory_bytes)), h('td', {}, n.num_gpus ?? ''),
          h('td', {}, n.slurm_job_id ?? ''), h('td', {}, fmtTime(n.created_at)), h('td', {}, n.is_active ? 'yes' : 'no'),
          h('td', {}, n.lease_deadline ? `${Math.round(n.lease_deadline - now)} s left` : ''),
          h('td', { title: n.jobs.join(', ') }, n.jobs.length))),
        'No runner has registered yet.'),
      h('h2', {}, `Slurm allocations (${allocs.total})`),
      table('allocation-table', ['ID', 'Slurm job', 'Scheduler', 'Submitted', 'State'],
        allocs.items.map((a) => h('tr', {}, h('td', {}, a.id), h('td', {}, a.slurm_job_id), h('td', {}, a.scheduler ?? ''),
          h('td', {}, fmtTime(a.submitted_at)), h('td', {}, a.state))),
        'No allocations.'));
  });
  return { el, ...r };
}

export function eventsPanel(workflowId) {
  const el = h('div', { id: 'events' });
  const SHOW = 200;
  const r = refresher(async () => {
    const head = await getJson(`/workflows/${workflowId}/events`, { limit: 0 });
    const offset = Math.max(0, head.total - SHOW);
    const page = await getJson(`/workflows/${workflowId}/events`, { offset, limit: SHOW });
    el.replaceChildren(
      h('h2', {}, `Events (${head.total}${head.total > SHOW ? `, the last ${SHOW}` : ''})`),
      table('event-table', ['Time', 'Event', 'Details'],
        page.items.reverse().map((e) => h('tr', {}, h('td', {}, fmtTime(e.ts)), h('td', {}, e.kind),
          h('td', { class: 'name', title: JSON.stringify(e.data) }, e.data ? JSON.stringify(e.data) : ''))),
        'No events yet.'));
  });
  return { el, ...r };
}
