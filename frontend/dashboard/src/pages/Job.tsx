// One job: status and its transitions (live), times, exit code, failure reason, its
// scheduling (priority, retries, not before, retry at, expires at, deadline, expected
// duration), the observer's estimates and deadline risk, and every ended attempt,
// the log as it grows, output files to download, and cancel.

import { useEffect, useRef, useState } from 'preact/hooks';

import { api, download, JobStatus, JobView, Me, onJobEvents, stream } from '../api';
import { duration, fromNow, StatusBadge, when } from '../format';

interface Step {
  to: JobStatus;
  attempt: number;
  at: string;
  live: boolean;
}

interface LogLine {
  stream: 'stdout' | 'stderr';
  text: string;
}

function stepsOf(job: JobView): Step[] {
  const steps: Step[] = [{ to: 'queued', attempt: 1, at: job.createdAt, live: false }];
  if (job.startedAt) steps.push({ to: 'running', attempt: job.attempt, at: job.startedAt, live: false });
  if (job.finishedAt) steps.push({ to: job.status, attempt: job.attempt, at: job.finishedAt, live: false });
  return steps;
}

const ended = (s: JobStatus) => s === 'finished' || s === 'failed' || s === 'cancelled';

export function JobPage(props: { id: string; me: Me | null }) {
  const [job, setJob] = useState<JobView | null>(null);
  const [steps, setSteps] = useState<Step[]>([]);
  const [log, setLog] = useState<LogLine[]>([]);
  const [logState, setLogState] = useState<'waiting' | 'following' | 'ended'>('waiting');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const logBox = useRef<HTMLPreElement>(null);
  const follow = useRef(true);

  const refresh = () => api.job(props.id).then(setJob, (e) => setError(e.message));

  useEffect(() => {
    setJob(null);
    setLog([]);
    setSteps([]);
    setError('');
    api.job(props.id).then((j) => {
      setJob(j);
      setSteps(stepsOf(j));
    }, (e) => setError(e.message));
    const stopEvents = onJobEvents((e) => {
      if (e.kind === 'reset') return void refresh();
      if (e.transition.jobId !== props.id) return;
      const t = e.transition;
      if (t.from === t.to) {
        // A notice, not a transition: the plan's deadline verdict changed.
        if (t.deadlineAtRisk !== undefined) setJob((j) => (j ? { ...j, deadlineAtRisk: t.deadlineAtRisk } : j));
        return void refresh();
      }
      setSteps((s) => [...s.filter((x) => x.live || !(x.to === t.to && x.attempt === t.attempt)), { to: t.to, attempt: t.attempt, at: t.at, live: true }]);
      setJob((j) => (j ? { ...j, status: t.to, attempt: t.attempt } : j));
      void refresh();
    });
    const stopLog = stream(
      `/api/v1/jobs/${encodeURIComponent(props.id)}/logs?follow=true`,
      (e) => {
        if (e.event === 'stdout' || e.event === 'stderr') {
          const { text } = JSON.parse(e.data) as { text: string };
          setLogState('following');
          setLog((l) => {
            const last = l[l.length - 1];
            if (last && last.stream === e.event) return [...l.slice(0, -1), { stream: last.stream, text: last.text + text }];
            return [...l, { stream: e.event as 'stdout' | 'stderr', text }];
          });
        } else if (e.event === 'end') {
          setLogState('ended');
          void refresh();
        }
      },
      { reconnect: false },
    );
    return () => {
      stopEvents();
      stopLog();
    };
  }, [props.id]);

  // Estimates follow the observer's plan, made anew every period: re-read them while the job waits or runs.
  const waiting = job !== null && !ended(job.status);
  useEffect(() => {
    if (!waiting) return;
    const timer = window.setInterval(() => void refresh(), 3000);
    return () => window.clearInterval(timer);
  }, [props.id, waiting]);

  useEffect(() => {
    const box = logBox.current;
    if (box && follow.current) box.scrollTop = box.scrollHeight;
  }, [log]);

  if (error && !job) {
    return (
      <section>
        <h1 tabIndex={-1}>Job</h1>
        <p class="error" role="alert">{error}</p>
        <p><a href="#/jobs">Back to your jobs</a></p>
      </section>
    );
  }
  if (!job) return <section><h1 tabIndex={-1}>Job</h1><p>Loading…</p></section>;

  const cancel = async () => {
    setBusy(true);
    try {
      setJob(await api.cancel(job.id));
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const get = async (file: string) => {
    try {
      await download(job.id, file);
    } catch (e) {
      setError((e as Error).message);
    }
  };

  return (
    <section aria-labelledby="job-title" data-testid="job-page" data-job={job.id}>
      <div class="head">
        <h1 id="job-title" tabIndex={-1}>Job <span class="mono">{job.id}</span></h1>
        {!ended(job.status) && (
          <button type="button" class="danger" onClick={cancel} disabled={busy}>Cancel job</button>
        )}
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="cards">
        <dl class="facts">
          <dt>Status</dt><dd data-testid="job-status" aria-live="polite"><StatusBadge status={job.status} /></dd>
          <dt>Attempt</dt><dd>{job.attempt}</dd>
          <dt>Owner</dt><dd>{job.owner}</dd>
          <dt>Repository</dt><dd class="url">{job.url}</dd>
          <dt>Arguments</dt><dd class="mono">{job.args || '—'}</dd>
          <dt>Submitted</dt><dd>{when(job.createdAt)}</dd>
          <dt>Started</dt><dd>{when(job.startedAt)}</dd>
          <dt>Ended</dt><dd>{when(job.finishedAt)}</dd>
          <dt>Took</dt><dd>{duration(job.elapsedMs)}</dd>
          <dt>Exit code</dt><dd data-testid="exit-code">{job.exitCode ?? '—'}</dd>
          {job.failure && <><dt>Failure</dt><dd class="failure" data-testid="failure">{job.failure}</dd></>}
          <dt>Priority</dt><dd data-testid="priority">{job.priority}</dd>
          <dt>Retries</dt><dd data-testid="retries">{job.retries === 0 ? 'none' : job.retries}</dd>
          {job.notBefore && <><dt>Not before</dt><dd data-testid="not-before"><time dateTime={job.notBefore}>{when(job.notBefore)}</time></dd></>}
          {/* Only while the retry waits: the view keeps the last retry's time after it ran. */}
          {job.retryAt && job.status === 'queued' && <><dt>Retry at</dt><dd data-testid="retry-at"><time dateTime={job.retryAt}>{when(job.retryAt)}</time></dd></>}
          {job.expiresAt && <><dt>Expires at</dt><dd data-testid="expires-at"><time dateTime={job.expiresAt}>{when(job.expiresAt)}</time></dd></>}
          {job.deadline && <><dt>Deadline</dt><dd data-testid="deadline">
            <time dateTime={job.deadline}>{when(job.deadline)}</time> <small>{fromNow(job.deadline)}</small>{' '}
            {job.deadlineAtRisk
              ? <span class="risk" data-testid="deadline-risk" data-at-risk="true" role="status">at risk: predicted to finish after it</span>
              : !ended(job.status) && <span class="on-time" data-testid="deadline-risk" data-at-risk="false">on time</span>}
          </dd></>}
          {job.expectedDurationSecs != null && <><dt>Expected run</dt><dd data-testid="expected-duration">{duration(Math.round(job.expectedDurationSecs * 1000))}</dd></>}
          {!ended(job.status) && <>
            {job.status === 'queued' && <><dt>Estimated start</dt><dd data-testid="estimated-start">{job.estimatedStartAt
              ? <><time dateTime={job.estimatedStartAt}>{when(job.estimatedStartAt)}</time> <small>{fromNow(job.estimatedStartAt)}</small></>
              : <span class="empty">no plan yet</span>}</dd></>}
            <dt>Estimated finish</dt><dd data-testid="estimated-finish">{job.estimatedFinishAt
              ? <><time dateTime={job.estimatedFinishAt}>{when(job.estimatedFinishAt)}</time> <small>{fromNow(job.estimatedFinishAt)}</small></>
              : <span class="empty">no plan yet</span>}</dd>
          </>}
        </dl>
        <div>
          <h2>History</h2>
          <ol class="timeline" data-testid="timeline">
            {steps.map((s) => (
              <li data-to={s.to} data-live={s.live ? 'true' : 'false'}>
                <StatusBadge status={s.to} /> <span>attempt {s.attempt}</span> <time dateTime={s.at}>{when(s.at)}</time>
              </li>
            ))}
          </ol>
          <h2>Output files</h2>
          {job.outputFiles.length === 0 ? <p class="empty">{ended(job.status) ? 'None.' : 'Not yet.'}</p> : (
            <ul class="files" data-testid="files">
              {job.outputFiles.map((f) => (
                <li><span class="mono">{f}</span> <button type="button" class="small" onClick={() => get(f)} aria-label={`Download ${f}`}>Download</button></li>
              ))}
            </ul>
          )}
        </div>
      </div>
      <h2 id="attempts-title">Attempts</h2>
      {job.attempts.length === 0 ? (
        <p class="empty" data-testid="no-attempts">{ended(job.status) ? 'None recorded.' : 'None has ended yet.'}</p>
      ) : (
        <div class="table-wrap">
          <table data-testid="attempts" aria-labelledby="attempts-title">
            <thead>
              <tr><th scope="col">Attempt</th><th scope="col">Worker</th><th scope="col">Started</th><th scope="col">Ended</th><th scope="col">Outcome</th><th scope="col">Reason</th></tr>
            </thead>
            <tbody>
              {job.attempts.map((a) => (
                <tr data-attempt={a.attempt} data-outcome={a.outcome}>
                  <td>{a.attempt}</td>
                  <td class="mono">{a.worker ?? '—'}</td>
                  <td>{when(a.startedAt)}</td>
                  <td>{when(a.endedAt)}</td>
                  <td>{a.outcome.replace('_', ' ')}</td>
                  <td>{a.reason ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h2 id="log-title">Log <small data-testid="log-state">{logState === 'ended' ? '(complete)' : logState === 'following' ? '(live)' : '(waiting for output)'}</small></h2>
      <p class="legend"><span class="out">stdout</span> <span class="err">stderr</span></p>
      <pre class="log" ref={logBox} tabIndex={0} aria-labelledby="log-title" data-testid="log"
        onScroll={(e) => { const b = e.currentTarget; follow.current = b.scrollTop + b.clientHeight >= b.scrollHeight - 8; }}>
        {log.map((l) => <span class={l.stream === 'stderr' ? 'err' : 'out'} data-stream={l.stream}>{l.text}</span>)}
      </pre>
    </section>
  );
}
