// Small formatting helpers shared by the pages.

import { JobStatus } from './api';

export function when(rfc3339: string | null | undefined): string {
  if (!rfc3339) return '—';
  const d = new Date(rfc3339);
  return Number.isNaN(d.getTime()) ? rfc3339 : d.toLocaleString();
}

export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** `in 4 min 10 s` / `12.0 s ago` from now, for a predicted or promised time. */
export function fromNow(rfc3339: string | null | undefined, now = Date.now()): string {
  if (!rfc3339) return '';
  const at = new Date(rfc3339).getTime();
  if (Number.isNaN(at)) return '';
  const gap = at - now;
  if (Math.abs(gap) < 1000) return 'now';
  return gap > 0 ? `in ${duration(Math.round(gap))}` : `${duration(Math.round(-gap))} ago`;
}

export function shortId(id: string): string {
  return id.slice(-12);
}

export function StatusBadge(props: { status: JobStatus }) {
  return <span class={`status s-${props.status}`} data-status={props.status}>{props.status}</span>;
}
