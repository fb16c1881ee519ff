// The job table: one page at a time from the server (GET .../jobs with offset, limit, status,
// name_contains, sort_by, reverse_sort), so it costs the same on a million jobs as on ten.
// Live: status cells of the jobs on the page change with the feed; a page whose membership the
// feed may have changed (a status filter, a status sort) is fetched again, at most once a second.
import { getJson } from './api.js';
import { STATUSES, fmtBytes, fmtDuration, fmtInt, h, pill, toast } from './util.js';

const REFRESH_MS = 1000;
const COLUMNS = [
  ['id', 'ID', true], ['name', 'Name', true], ['status', 'Status', true], ['attempt', 'Attempt', true],
  ['num_cpus', 'CPUs'], ['memory_bytes', 'Memory'], ['runtime_s', 'Time limit'], ['compute_node_id', 'Node'],
];

export function jobsTable(workflowId, onOpen) {
  const q = { status: '', name_contains: '', sort_by: 'id', reverse_sort: false, offset: 0, limit: 100 };
  let total = 0;
  let loading = null;
  let again = false;
  let lastLoad = 0;
  let refreshTimer = null;
  const cells = new Map(); // job id -> {st, node} cells of its row

  const statusSel = h('select', { id: 'job-status', 'aria-label': 'status filter',
    onchange: () => { q.status = statusSel.value; q.offset = 0; load(); } },
  h('option', { value: '' }, 'all statuses'), STATUSES.map((s) => h('option', { value: s }, s)));
  let nameTimer = null;
  const nameBox = h('input', { type: 'search', id: 'job-name', placeholder: 'name contains…', 'aria-label': 'name filter',
    oninput: () => { clearTimeout(nameTimer); nameTimer = setTimeout(() => { q.name_contains = nameBox.value.trim(); q.offset = 0; load(); }, 300); } });
  const sizeSel = h('select', { id: 'job-page-size', 'aria-label': 'page size',
    onchange: () => { q.limit = Number(sizeSel.value); q.offset = 0; load(); } },
  [50, 100, 500].map((n) => h('option', { value: n, selected: n === 100 }, `${n} / page`)));
  const info = h('span', { class: 'muted', id: 'job-range' });
  const btn = (label, id, fn) => h('button', { id, onclick: fn }, label);
  const first = btn('« First', 'job-first', () => { q.offset = 0; load(); });
  const prev = btn('‹ Prev', 'job-prev', () => { q.offset = Math.max(0, q.offset - q.limit); load(); });
  const next = btn('Next ›', 'job-next', () => { q.offset += q.limit; load(); });
  const last = btn('Last »', 'job-last', () => { q.offset = Math.max(0, Math.floor((total - 1) / q.limit) * q.limit); load(); });
  const heads = COLUMNS.map(([key, label, sortable]) => {
    const th = h('th', { 'data-key': key, class: sortable ? 'sortable' : '' }, label);
    if (sortable) {
      th.addEventListener('click', () => {
        if (q.sort_by === key) q.reverse_sort = !q.reverse_sort;
        else { q.sort_by = key; q.reverse_sort = false; }
        q.offset = 0;
        load();
      });
    }
    return th;
  });
  const tbody = h('tbody');
  const el = h('div', { id: 'jobs' },
    h('div', { class: 'row' }, statusSel, nameBox, sizeSel, h('span', { class: 'spacer' }), info),
    h('div', { class: 'card', style: 'padding:0;overflow-x:auto' },
      h('table', { class: 'grid', id: 'job-table' }, h('thead', {}, h('tr', {}, heads)), tbody)),
    h('div', { class: 'pager' }, first, prev, next, last));

  function render(page) {
    total = page.total;
    cells.clear();
    tbody.replaceChildren(...page.items.map((j) => {
      const st = h('td', {}, pill(j.status));
      const node = h('td', {}, j.compute_node_id ?? '');
      cells.set(j.id, { st, node });
      return h('tr', { class: 'clickable', 'data-job-id': j.id, onclick: () => onOpen(j.id) },
        h('td', {}, j.id), h('td', { class: 'name', title: j.name }, j.name), st, h('td', {}, j.attempt),
        h('td', {}, j.num_cpus), h('td', {}, fmtBytes(j.memory_bytes)),
        h('td', {}, j.runtime_s ? fmtDuration(j.runtime_s) : '—'), node);
    }));
    if (!page.items.length) tbody.append(h('tr', {}, h('td', { colspan: COLUMNS.length, class: 'empty' }, 'No jobs match.')));
    const from = page.items.length ? q.offset + 1 : 0;
    info.textContent = `${fmtInt(from)}–${fmtInt(q.offset + page.items.length)} of ${fmtInt(total)}`;
    prev.disabled = first.disabled = q.offset === 0;
    next.disabled = last.disabled = q.offset + q.limit >= total;
    for (const th of heads) {
      th.classList.toggle('sorted-asc', th.dataset.key === q.sort_by && !q.reverse_sort);
      th.classList.toggle('sorted-desc', th.dataset.key === q.sort_by && q.reverse_sort);
    }
    el.dataset.total = String(total);
    el.dataset.offset = String(q.offset);
    el.dataset.loaded = String(Date.now());
  }

  async function load() {
    if (loading) { again = true; return loading; }
    loading = (async () => {
      do {
        again = false;
        lastLoad = Date.now();
        try {
          const page = await getJson(`/workflows/${workflowId}/jobs`, { ...q, reverse_sort: q.reverse_sort || null });
          if (!again) render(page);
        } catch (err) {
          toast(`jobs: ${err.message}`, 'error');
        }
      } while (again);
      loading = null;
    })();
    return loading;
  }

  function refreshSoon() {
    if (refreshTimer !== null) return;
    const wait = Math.max(0, REFRESH_MS - (Date.now() - lastLoad));
    refreshTimer = setTimeout(() => { refreshTimer = null; load(); }, wait);
  }

  /** Feed messages: job_status updates the page's cells; membership changes refetch. */
  function apply(batch) {
    let stale = false;
    for (const m of batch) {
      if (m.type === '_connected' || m.type === 'workflow') { stale = true; continue; }
      if (m.type !== 'job_status') continue;
      const td = cells.get(m.job_id);
      if (td) {
        td.st.replaceChildren(pill(m.new));
        // held by a node only while pending or running (the feed does not say which node)
        if (m.new !== 'pending' && m.new !== 'running') td.node.textContent = '';
      }
      if (q.status && (m.old === q.status || m.new === q.status)) stale = true;
      if (q.sort_by === 'status' || q.sort_by === 'attempt') stale = stale || Boolean(td);
    }
    if (stale) refreshSoon();
  }

  function filterStatus(status) {
    statusSel.value = status;
    q.status = status;
    q.offset = 0;
    load();
  }

  return { el, load, apply, filterStatus };
}
