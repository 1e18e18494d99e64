// The caller's jobs (an admin may show everyone's), filtered by status, one page at a
// time, with the predicted start of waiting jobs and a flag on those whose deadline is at
// risk; statuses change live from /api/v1/events.

import { useEffect, useRef, useState } from 'preact/hooks';

import { api, JobList, Me, onJobEvents, STATUSES } from '../api';
import { duration, shortId, StatusBadge, when } from '../format';

const PAGE = 20;

export function JobsPage(props: { me: Me | null }) {
  const [status, setStatus] = useState('');
  const [all, setAll] = useState(false);
  const [offset, setOffset] = useState(0);
  const [list, setList] = useState<JobList | null>(null);
  const [error, setError] = useState('');
  const reloadTimer = useRef<number>();
  const query = useRef({ status, all, offset });
  query.current = { status, all, offset };

  const load = () =>
    api
      .jobs({ offset: query.current.offset, limit: PAGE, status: query.current.status || undefined, all: query.current.all })
      .then((l) => {
        setList(l);
        setError('');
      }, (e) => setError(e.message));
  const reloadSoon = () => {
    window.clearTimeout(reloadTimer.current);
    reloadTimer.current = window.setTimeout(load, 250);
  };

  useEffect(() => {
    load();
  }, [status, all, offset]);

  useEffect(
    () =>
      onJobEvents((e) => {
        if (e.kind === 'reset') return reloadSoon();
        const t = e.transition;
        setList((current) => {
          if (!current) return current;
          const row = current.jobs.find((j) => j.id === t.jobId);
          const filter = query.current.status;
          if (!row || (filter && filter !== t.to)) {
            // A new job, or one that leaves or enters the filter: the page changes.
            reloadSoon();
            return current;
          }
          return {
            ...current,
            jobs: current.jobs.map((j) => {
              if (j.id !== t.jobId) return j;
              // A notice (from is to) carries the plan's new deadline verdict.
              const risk = t.deadlineAtRisk !== undefined ? { deadlineAtRisk: t.deadlineAtRisk } : {};
              return { ...j, status: t.to, attempt: t.attempt, ...risk };
            }),
          };
        });
        if (t.to === 'finished' || t.to === 'failed' || t.to === 'cancelled') reloadSoon();
      }),
    [],
  );

  const showOwner = all && props.me?.admin;
  const total = list?.total ?? 0;
  return (
    <section aria-labelledby="jobs-title">
      <div class="head">
        <h1 id="jobs-title" tabIndex={-1}>Jobs</h1>
        <a class="button" href="#/submit">Submit a job</a>
      </div>
      <div class="filters">
        <label for="status-filter">Status</label>
        <select id="status-filter" value={status} onChange={(e) => { setOffset(0); setStatus(e.currentTarget.value); }}>
          <option value="">all</option>
          {STATUSES.map((s) => <option value={s}>{s}</option>)}
        </select>
        {props.me?.admin && (
          <label class="check">
            <input type="checkbox" checked={all} onChange={(e) => { setOffset(0); setAll(e.currentTarget.checked); }} />
            every user's jobs
          </label>
        )}
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="table-wrap">
        <table data-testid="jobs-table">
          <caption class="sr-only">Your jobs, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Job</th>
              {showOwner && <th scope="col">Owner</th>}
              <th scope="col">Status</th>
              <th scope="col" class="wide">Repository</th>
              <th scope="col">Submitted</th>
              <th scope="col" class="wide">Starts (est.)</th>
              <th scope="col">Took</th>
            </tr>
          </thead>
          <tbody>
            {list?.jobs.map((j) => (
              <tr data-job={j.id}>
                <td><a href={`#/jobs/${j.id}`} title={j.id}>…{shortId(j.id)}</a>{j.attempt > 1 && <small> attempt {j.attempt}</small>}</td>
                {showOwner && <td>{j.owner}</td>}
                <td><StatusBadge status={j.status} />
                  {j.deadlineAtRisk && (j.status === 'queued' || j.status === 'running') &&
                    <> <span class="risk" data-at-risk="true" title="The observer's plan predicts it to finish after its deadline">deadline at risk</span></>}</td>
                <td class="wide url">{j.url}{j.args && <small> {j.args}</small>}</td>
                <td>{when(j.createdAt)}</td>
                <td class="wide" data-testid="estimated-start">{j.status === 'queued' && j.estimatedStartAt
                  ? <time dateTime={j.estimatedStartAt}>{when(j.estimatedStartAt)}</time> : '—'}</td>
                <td>{duration(j.elapsedMs)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {list && list.jobs.length === 0 && <p class="empty">No jobs{status ? ` ${status}` : ''} yet.</p>}
      </div>
      <nav class="pager" aria-label="Pages of jobs">
        <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>Newer</button>
        <span aria-live="polite">{total ? `${offset + 1}–${Math.min(offset + PAGE, total)} of ${total}` : '0 jobs'}</span>
        <button type="button" disabled={offset + PAGE >= total} onClick={() => setOffset(offset + PAGE)}>Older</button>
      </nav>
    </section>
  );
}
