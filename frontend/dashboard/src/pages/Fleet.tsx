// The fleet over time, from the stored observations: arrival, service and finish rates,
// queue depth, queue wait against the target, running and desired workers, the jobs with a
// deadline and those the plan predicts late, the policy's decisions, and its settings.

import { useEffect, useMemo, useRef, useState } from 'preact/hooks';

import { api, Observation, PolicySettings } from '../api';
import { Chart } from '../chart';

const KEEP = 1800;

export function FleetPage() {
  const [obs, setObs] = useState<Observation[]>([]);
  const [policy, setPolicy] = useState<PolicySettings | null>(null);
  const [error, setError] = useState('');
  const last = useRef<number | undefined>(undefined);

  useEffect(() => {
    let stop = false;
    let timer: number | undefined;
    api.policy().then(setPolicy, (e) => setError(e.message));
    const poll = async () => {
      try {
        const fresh = await api.observations(last.current);
        if (stop) return;
        if (fresh.length) {
          last.current = fresh[fresh.length - 1].timestamp;
          setObs((o) => [...o, ...fresh].slice(-KEEP));
        }
        setError('');
      } catch (e) {
        setError((e as Error).message);
      }
      if (!stop) timer = window.setTimeout(poll, 2000);
    };
    void poll();
    return () => {
      stop = true;
      window.clearTimeout(timer);
    };
  }, []);

  const data = useMemo(() => {
    const t = obs.map((o) => o.timestamp / 1000);
    const col = (f: (o: Observation) => number) => obs.map(f);
    return {
      t,
      arrival: col((o) => o.avgRateOfArrival),
      service: col((o) => o.avgRateOfService),
      finished: col((o) => o.avgRateOfFinished),
      depth: col((o) => o.queueDepth),
      p50: col((o) => o.queueWaitP50),
      p95: col((o) => o.queueWaitP95),
      target: obs.map(() => policy?.targetWaitSecs ?? null),
      workers: col((o) => o.workers),
      desired: col((o) => o.desiredWorkers),
      busy: col((o) => o.busySlots),
      deadlineJobs: col((o) => o.deadlineJobs ?? 0),
      atRisk: col((o) => o.deadlinesAtRisk ?? 0),
    };
  }, [obs, policy]);

  const decisions = useMemo(() => {
    const out: { at: number; from: number; to: number; policy: string }[] = [];
    for (let i = 1; i < obs.length; i++) {
      if (obs[i].desiredWorkers !== obs[i - 1].desiredWorkers) {
        out.push({ at: obs[i].timestamp, from: obs[i - 1].desiredWorkers, to: obs[i].desiredWorkers, policy: obs[i].policy });
      }
    }
    return out.slice(-10).reverse();
  }, [obs]);

  const now = obs[obs.length - 1];
  return (
    <section aria-labelledby="fleet-title">
      <h1 id="fleet-title" tabIndex={-1}>Fleet</h1>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="summary" aria-live="polite">
        <div><span>Workers</span><strong data-testid="workers-now">{now ? now.workers : '—'}</strong></div>
        <div><span>Desired</span><strong>{now ? now.desiredWorkers : '—'}</strong></div>
        <div><span>Queue depth</span><strong>{now ? now.queueDepth : '—'}</strong></div>
        <div><span>Wait p95</span><strong>{now ? `${now.queueWaitP95.toFixed(2)} s` : '—'}</strong></div>
        <div><span>Deadlines at risk</span><strong data-testid="deadlines-at-risk" class={now?.deadlinesAtRisk ? 'risk-count' : undefined}>
          {now ? `${now.deadlinesAtRisk ?? 0} of ${now.deadlineJobs ?? 0}` : '—'}</strong></div>
        <div><span>Observations</span><strong data-testid="observation-count">{obs.length}</strong></div>
      </div>
      <div class="charts">
        <Chart testId="chart-rates" title="Jobs per second" unit="jobs/s" times={data.t} series={[
          { label: 'arrivals', color: '#1f4e8c', values: data.arrival },
          { label: 'services', color: '#b35900', values: data.service },
          { label: 'finishes', color: '#2b7a3d', values: data.finished },
        ]} />
        <Chart testId="chart-depth" title="Queue depth" unit="jobs" times={data.t} series={[
          { label: 'queued', color: '#6a3d9a', values: data.depth, stepped: true },
        ]} />
        <Chart testId="chart-wait" title="Queue wait against the target" unit="seconds" times={data.t} series={[
          { label: 'p50', color: '#1f4e8c', values: data.p50 },
          { label: 'p95', color: '#b30000', values: data.p95 },
          { label: 'target', color: '#555', values: data.target, dash: [6, 4] },
        ]} />
        <Chart testId="chart-workers" title="Workers: running and desired" unit="workers" times={data.t} series={[
          { label: 'running', color: '#2b7a3d', values: data.workers, stepped: true },
          { label: 'desired', color: '#b35900', values: data.desired, stepped: true, dash: [6, 4] },
          { label: 'busy slots', color: '#6a3d9a', values: data.busy, stepped: true },
        ]} />
        <Chart testId="chart-deadlines" title="Jobs with a deadline: planned late" unit="jobs" times={data.t} series={[
          { label: 'with a deadline', color: '#1f4e8c', values: data.deadlineJobs, stepped: true },
          { label: 'at risk', color: '#b30000', values: data.atRisk, stepped: true },
        ]} />
      </div>
      <div class="cards">
        <div>
          <h2>Policy decisions</h2>
          {decisions.length === 0 ? <p class="empty">No change of the desired fleet size in this window.</p> : (
            <table data-testid="decisions">
              <thead><tr><th scope="col">When</th><th scope="col">Desired workers</th><th scope="col">Policy</th></tr></thead>
              <tbody>
                {decisions.map((d) => (
                  <tr><td>{new Date(d.at).toLocaleTimeString()}</td><td>{d.from} → {d.to}</td><td>{d.policy}</td></tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        <div>
          <h2>Policy settings</h2>
          {policy && (
            <dl class="facts" data-testid="policy">
              <dt>Policy</dt><dd>{policy.policy}</dd>
              <dt>Scaler</dt><dd>{policy.scaler}</dd>
              <dt>Workers</dt><dd>{policy.minWorkers} to {policy.maxWorkers}</dd>
              <dt>Target wait</dt><dd>{policy.targetWaitSecs} s for all but {(policy.waitFraction * 100).toFixed(0)} % of jobs</dd>
              <dt>Lag threshold</dt><dd>{policy.lagThreshold} per worker</dd>
              <dt>Stabilisation</dt><dd>{policy.stabilisationSecs} s</dd>
              <dt>Budget</dt><dd>{policy.budgetWorkerSecondsPerHour ? `${policy.budgetWorkerSecondsPerHour} worker-s/h` : 'none'}</dd>
              <dt>Period</dt><dd>{policy.refreshRateSecs} s</dd>
            </dl>
          )}
        </div>
      </div>
    </section>
  );
}
