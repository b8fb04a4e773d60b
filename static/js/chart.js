// The 30-day line charts (uPlot, vendored; loaded by index.html before
// the modules). Charts draw numbers; the tables beside them carry the
// API's exact strings.
import { h } from './ui.js';

const COLORS = ['#0b57d0', '#b3261e', '#188038', '#e37400', '#8430ce', '#007b83', '#c5221f', '#5f6368'];

// One chart: x = the stats' days, one line per series.
// series: [{label, days: [{date, calls, total_tokens, spend}]}]
export function chart(title, series, metric) {
  const box = h('figure', { class: 'chart', 'data-chart': title, 'data-series': series.length },
    h('figcaption', {}, title));
  const days = series.length ? series[0].days : [];
  if (!window.uPlot || !days.length) return box;
  const xs = days.map((d) => Date.parse(`${d.date}T00:00:00Z`) / 1000);
  const data = [xs, ...series.map((s) => s.days.map((d) => Number(d[metric])))];
  const main = document.getElementById('main');
  const width = Math.max(280, Math.min((main ? main.clientWidth : 800) - 72, 900));
  const opts = {
    width, height: 220,
    scales: { x: { time: true } },
    axes: [{}, { size: 60, values: (u, v) => v.map((x) => (metric === 'spend' ? `$${x}` : x)) }],
    series: [{ label: 'Day' }, ...series.map((s, i) => ({
      label: s.label, stroke: COLORS[i % COLORS.length], width: 2,
      value: (u, v) => (v === null || v === undefined ? '—' : metric === 'spend' ? `$${v}` : v),
    }))],
  };
  // eslint-disable-next-line no-new
  new window.uPlot(opts, data, box);
  box.setAttribute('aria-label', `${title}: line chart over ${days.length} days; the table below has the numbers`);
  return box;
}

