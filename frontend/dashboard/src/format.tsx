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

export function shortId(id: string): string {
  return id.slice(-12);
}

export function StatusBadge(props: { status: JobStatus }) {
  return <span class={`status s-${props.status}`} data-status={props.status}>{props.status}</span>;
}
