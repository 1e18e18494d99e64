// The public jobq API, as the dashboard uses it. The token travels only in the
// Authorization header, never in a URL (so streams are read with fetch, not EventSource,
// which cannot send headers).

import { currentToken, signOut } from './auth';

export type JobStatus = 'queued' | 'running' | 'finished' | 'failed' | 'cancelled';
export const STATUSES: JobStatus[] = ['queued', 'running', 'finished', 'failed', 'cancelled'];

export interface JobView {
  id: string;
  owner: string;
  status: JobStatus;
  attempt: number;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  exitCode: number | null;
  elapsedMs: number | null;
  outputFiles: string[];
  failure: string | null;
  url: string;
  args: string;
  /** Every attempt that ended, oldest first. */
  attempts: AttemptView[];
  /** Higher first while jobs wait (-100 to 100). */
  priority: number;
  /** Extra attempts after a failed run that the submit asked for. */
  retries: number;
  notBefore: string | null;
  retryAt: string | null;
  expiresAt: string | null;
  /** Finish by (RFC 3339). */
  deadline?: string | null;
  /** What the submit said a run takes, seconds. */
  expectedDurationSecs?: number | null;
  /** The observer's plan predicts the job to finish after its deadline. */
  deadlineAtRisk?: boolean;
  /** The plan's predicted start of a waiting job (a running job's actual start). */
  estimatedStartAt?: string | null;
  /** The plan's predicted finish of a waiting or running job. */
  estimatedFinishAt?: string | null;
}

export type AttemptOutcome = 'finished' | 'failed' | 'cancelled' | 'handed_back' | 'lost';

/** One ended attempt of a job. */
export interface AttemptView {
  attempt: number;
  worker: string | null;
  startedAt: string | null;
  endedAt: string;
  outcome: AttemptOutcome;
  reason: string | null;
}

/** What the submit form sends; the scheduling fields only when the user set them. */
export interface SubmitBody {
  url: string;
  args: string;
  config: string;
  priority?: number | string;
  retries?: number | string;
  notBefore?: string;
  expireAfterSecs?: number | string;
  deadline?: string;
  expectedDurationSecs?: number | string;
}

export interface JobList {
  jobs: JobView[];
  total: number;
  offset: number;
  limit: number;
}

export interface JobTransition {
  jobId: string;
  attempt: number;
  from: JobStatus | null;
  to: JobStatus;
  at: string;
  owner: string | null;
  /** Only on a notice (`from` is `to`): the plan now predicts the job late, or in time again. */
  deadlineAtRisk?: boolean;
}

export interface Observation {
  avgRateOfArrival: number;
  avgRateOfService: number;
  avgRateOfFinished: number;
  avgResponseTime: number;
  timestamp: number;
  queueDepth: number;
  workers: number;
  busySlots: number;
  queueWaitP50: number;
  queueWaitP95: number;
  desiredWorkers: number;
  policy: string;
  /** Waiting and running jobs with a deadline, as the period's plan saw them. */
  deadlineJobs?: number;
  /** Of those, the jobs the plan predicts to finish after their deadline. */
  deadlinesAtRisk?: number;
}

export interface PolicySettings {
  policy: string;
  scaler: string;
  minWorkers: number;
  maxWorkers: number;
  targetWaitSecs: number;
  waitFraction: number;
  lagThreshold: number;
  stabilisationSecs: number;
  budgetWorkerSecondsPerHour: number;
  refreshRateSecs: number;
}

export interface Me {
  username: string;
  roles: string[];
  admin: boolean;
}

/** An error answer of the API: its status and its `{"error"}` message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const token = currentToken();
  return token ? { Authorization: `Bearer ${token}`, ...extra } : extra;
}

async function failure(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === 'string') message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) void signOut('Your session ended; sign in again.');
  return new ApiError(response.status, message);
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, headers: headers() };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = headers({ 'Content-Type': 'application/json' });
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

export const api = {
  me: () => call<Me>('GET', '/api/v1/me'),
  jobs: (query: { offset: number; limit: number; status?: string; all?: boolean }) => {
    const q = new URLSearchParams({ offset: String(query.offset), limit: String(query.limit) });
    if (query.status) q.set('status', query.status);
    if (query.all) q.set('all', 'true');
    return call<JobList>('GET', `/api/v1/jobs?${q}`);
  },
  job: (id: string) => call<JobView>('GET', `/api/v1/jobs/${encodeURIComponent(id)}`),
  submit: (body: SubmitBody) => call<JobView>('POST', '/api/v1/jobs', body),
  cancel: (id: string) => call<JobView>('DELETE', `/api/v1/jobs/${encodeURIComponent(id)}`),
  observations: (since?: number, limit = 600) => {
    const q = new URLSearchParams({ limit: String(limit) });
    if (since !== undefined) q.set('since', String(since));
    return call<Observation[]>('GET', `/api/v1/observations?${q}`);
  },
  policy: () => call<PolicySettings>('GET', '/api/v1/fleet/policy'),
};

/** Downloads an output file with the token and hands it to the browser as a file. */
export async function download(id: string, file: string): Promise<void> {
  const path = file.split('/').map(encodeURIComponent).join('/');
  const response = await fetch(`/api/v1/jobs/${encodeURIComponent(id)}/results/${path}`, { headers: headers() });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = file.split('/').pop() ?? file;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

export interface StreamEvent {
  event: string;
  data: string;
  id?: string;
}

/**
 * Reads a Server-Sent-Events stream with fetch (so the token goes in a header), calling
 * `onEvent` for each event, and reconnects with `Last-Event-ID` when the stream drops,
 * unless `reconnect` is false. Returns a function that stops it.
 */
export function stream(
  path: string,
  onEvent: (e: StreamEvent) => void,
  options: { reconnect?: boolean; onState?: (connected: boolean) => void } = {},
): () => void {
  const reconnect = options.reconnect ?? true;
  let stopped = false;
  let controller = new AbortController();
  let lastId: string | undefined;
  let retryMs = 2000;

  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const h = headers({ Accept: 'text/event-stream' });
        if (lastId) h['Last-Event-ID'] = lastId;
        const response = await fetch(path, { headers: h, signal: controller.signal, cache: 'no-store' });
        if (!response.ok || !response.body) throw await failure(response);
        options.onState?.(true);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        let event: StreamEvent = { event: 'message', data: '' };
        let dataLines: string[] = [];
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let nl: number;
          while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
            const line = buffer.slice(0, nl);
            buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
            if (line === '') {
              if (dataLines.length) {
                event.data = dataLines.join('\n');
                if (event.id !== undefined) lastId = event.id;
                onEvent(event);
              }
              event = { event: 'message', data: '' };
              dataLines = [];
              continue;
            }
            if (line.startsWith(':')) continue; // heartbeat
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            let val = colon < 0 ? '' : line.slice(colon + 1);
            if (val.startsWith(' ')) val = val.slice(1);
            if (field === 'event') event.event = val;
            else if (field === 'data') dataLines.push(val);
            else if (field === 'id') event.id = val;
            else if (field === 'retry' && /^\d+$/.test(val)) retryMs = Number(val);
          }
        }
      } catch (e) {
        if (stopped || (e instanceof DOMException && e.name === 'AbortError')) return;
        if (e instanceof ApiError && (e.status === 401 || e.status === 404)) {
          options.onState?.(false);
          return;
        }
      }
      options.onState?.(false);
      if (!reconnect || stopped) return;
      await new Promise((r) => setTimeout(r, retryMs));
    }
  };
  void run();
  return () => {
    stopped = true;
    controller.abort();
  };
}

type Listener = (e: { kind: 'job'; transition: JobTransition } | { kind: 'reset' }) => void;
const listeners = new Set<Listener>();
let stopEvents: (() => void) | null = null;
let connectedState = false;
const stateListeners = new Set<(c: boolean) => void>();

/** Subscribes to the caller's job transitions; one stream serves every page. */
export function onJobEvents(listener: Listener): () => void {
  listeners.add(listener);
  if (!stopEvents) {
    stopEvents = stream(
      '/api/v1/events',
      (e) => {
        if (e.event === 'job') {
          const transition = JSON.parse(e.data) as JobTransition;
          listeners.forEach((l) => l({ kind: 'job', transition }));
        } else if (e.event === 'reset') {
          listeners.forEach((l) => l({ kind: 'reset' }));
        }
      },
      {
        onState: (c) => {
          connectedState = c;
          stateListeners.forEach((l) => l(c));
        },
      },
    );
  }
  return () => {
    listeners.delete(listener);
  };
}

export function onLiveState(listener: (connected: boolean) => void): () => void {
  stateListeners.add(listener);
  listener(connectedState);
  return () => stateListeners.delete(listener);
}

/** Ends the shared event stream (on sign-out). */
export function stopJobEvents(): void {
  stopEvents?.();
  stopEvents = null;
  connectedState = false;
}
