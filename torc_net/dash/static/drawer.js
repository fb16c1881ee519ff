// The job drawer: what a job is (command, requirements), what happened to it (every attempt's
// result, with CPU and memory when monitored), the tail of its output (what runners sent with
// its result; the server never opens a path a client names) and, where time-series samples
// exist, the same CPU/memory chart as `torc-trio plot-resources`.
import { ApiError, getJson } from './api.js';
import { fmtBytes, fmtDuration, fmtTime, h, pill, settings, toast } from './util.js';

let plotlyLoading = null;
function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!settings.plotly) return Promise.reject(new Error('plotly is not installed on the server'));
  plotlyLoading ??= new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = settings.plotly;
    s.onload = () => resolve(window.Plotly);
    s.onerror = () => reject(new Error('could not load plotly.js'));
    document.head.append(s);
  });
  return plotlyLoading;
}

const pct = (v) => (v === null || v === undefined ? '—' : `${Number(v).toFixed(1)} %`);

function resultsTable(items) {
  if (!items.length) return h('p', { class: 'muted' }, 'No results yet.');
  return h('div', { style: 'overflow-x:auto' }, h('table', { class: 'grid', id: 'job-results' },
    h('thead', {}, h('tr', {}, ['Run', 'Attempt', 'Status', 'Return code', 'Time', 'Finished', 'Peak mem', 'Peak CPU', 'Node', 'Cause']
      .map((t) => h('th', {}, t)))),
    h('tbody', {}, items.map((r) => h('tr', {},
      h('td', {}, r.run_id), h('td', {}, r.attempt), h('td', {}, pill(r.status)), h('td', {}, r.return_code),
      h('td', {}, fmtDuration(r.exec_time_s)), h('td', {}, fmtTime(r.completed_at)),
      h('td', {}, fmtBytes(r.peak_memory_bytes)), h('td', {}, pct(r.peak_cpu_percent)),
      h('td', {}, r.compute_node_id ?? ''), h('td', {}, r.failure_cause ?? ''))))));
}

async function optional(promise) {
  try { return await promise; } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) return null;
    throw err;
  }
}

function outputBlock(out) {
  const box = h('div', { id: 'job-output' });
  if (!out || (out.stdout === null && out.stderr === null)) {
    box.append(h('p', { class: 'muted' }, out && out.source === null && out.attempt === undefined
      ? 'No result yet.'
      : 'No output was sent with this result (runners send the tail of failed and terminated jobs; set execution_config: {output_tails: all} in the spec for every job).'));
    return box;
  }
  for (const stream of ['stdout', 'stderr']) {
    if (out[stream] === null || out[stream] === undefined) continue;
    box.append(h('h3', {}, stream, h('span', { class: 'muted' }, ` (last ${Math.round((out.max_bytes || 16384) / 1024)} KiB${out.source === 'file' ? ', read from the file' : ''})`)),
      h('pre', { class: `tail ${stream}`, 'data-stream': stream }, out[stream] || '(empty)'));
  }
  return box;
}

async function drawPlot(el, samples, title) {
  const Plotly = await loadPlotly();
  const t0 = samples[0].timestamp;
  const x = samples.map((s) => s.timestamp - t0);
  await Plotly.newPlot(el, [
    { x, y: samples.map((s) => s.cpu_percent), name: 'CPU %', type: 'scatter', mode: 'lines' },
    { x, y: samples.map((s) => s.memory_bytes / 2 ** 30), name: 'Memory (GiB)', type: 'scatter', mode: 'lines', yaxis: 'y2' },
  ], {
    title: { text: title }, height: 320, margin: { t: 40, r: 60, l: 50, b: 40 },
    xaxis: { title: { text: 'seconds since start' } },
    yaxis: { title: { text: 'CPU %' }, rangemode: 'tozero' },
    yaxis2: { title: { text: 'GiB' }, overlaying: 'y', side: 'right', rangemode: 'tozero' },
    legend: { orientation: 'h' },
  }, { displaylogo: false, responsive: true });
}

export function jobDrawer(workflowId) {
  let current = null;
  let el = null;
  let timer = null;

  function close() {
    el?.remove();
    el = null;
    current = null;
  }

  async function open(jobId) {
    current = jobId;
    if (!el) {
      el = h('aside', { class: 'drawer', id: 'drawer', role: 'dialog', 'aria-label': 'job details' });
      document.body.append(el);
      document.addEventListener('keydown', (e) => { if (e.key === 'Escape') close(); }, { once: true });
    }
    try {
      const base = `/workflows/${workflowId}/jobs/${jobId}`;
      const [job, results, out, samples] = await Promise.all([
        getJson(base),
        getJson(`/workflows/${workflowId}/results`, { job_id: jobId, limit: 1000 }),
        optional(getJson(`${base}/output`)),
        optional(getJson(`${base}/resource_samples`)),
      ]);
      if (current !== jobId || !el) return;
      const items = results.items;
      const rr = job.resource_requirements ? `${job.resource_requirements}: ` : '';
      el.replaceChildren(
        h('button', { class: 'close', onclick: close, 'aria-label': 'close' }, '✕'),
        h('h2', {}, `Job ${job.id}: `, h('span', { id: 'drawer-name' }, job.name)),
        h('div', { class: 'row' }, h('span', { id: 'drawer-status' }, pill(job.status)), h('span', { class: 'muted' }, `attempt ${job.attempt}, run ${job.run_id}`)),
        h('dl', {},
          h('dt', {}, 'Command'), h('dd', {}, h('code', { id: 'drawer-command' }, job.command)),
          job.invocation_script ? [h('dt', {}, 'Invocation script'), h('dd', {}, h('code', {}, job.invocation_script))] : null,
          h('dt', {}, 'Resources'), h('dd', {}, `${rr}${job.num_cpus} CPU, ${fmtBytes(job.memory_bytes)}, ${job.num_gpus} GPU, ${job.num_nodes} node(s), ${job.runtime_s ? fmtDuration(job.runtime_s) : 'no time limit'}`),
          h('dt', {}, 'Scheduler'), h('dd', {}, job.scheduler ?? '—'),
          h('dt', {}, 'Failure handler'), h('dd', {}, job.failure_handler ?? '—'),
          h('dt', {}, 'Priority'), h('dd', {}, job.priority ?? 0),
          h('dt', {}, 'Depends on'), h('dd', {}, job.depends_on.length ? job.depends_on.slice(0, 50).join(', ') + (job.depends_on.length > 50 ? ` … (${job.depends_on.length})` : '') : '—'),
          h('dt', {}, 'Compute node'), h('dd', {}, job.compute_node_id ?? '—')),
        h('h2', {}, 'Attempts'), resultsTable(items),
        h('h2', {}, 'Output'), outputBlock(out),
        ...(samples && samples.samples && samples.samples.length ? [h('h2', {}, 'CPU and memory'), h('div', { id: 'plot' })] : []));
      if (samples && samples.samples && samples.samples.length) {
        drawPlot(el.querySelector('#plot'), samples.samples, `Job ${job.id} (${job.name})`).catch((err) => toast(err.message, 'error'));
      }
      el.dataset.jobId = String(job.id);
      el.dataset.loaded = String(Date.now());
    } catch (err) {
      toast(`job ${jobId}: ${err.message}`, 'error');
    }
  }

  /** Feed messages: the open job changed status — show it, at most once a second. */
  function apply(batch) {
    if (current === null || timer !== null) return;
    if (batch.some((m) => m.type === 'job_status' && m.job_id === current)) {
      const id = current;
      timer = setTimeout(() => { timer = null; if (current === id) open(id); }, 1000);
    }
  }

  return { open, close, apply };
}
