// Submit a job: repository URL, args, config (checked as JSON when it looks like JSON) and
// the optional scheduling fields (priority, retries, not before, expire after, deadline,
// expected duration), with the
// server's validation errors beside the field they are about.

import { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';

import { api, ApiError, SubmitBody } from '../api';

type Field = 'url' | 'args' | 'config' | 'priority' | 'retries' | 'notBefore' | 'expireAfter' | 'deadline' | 'expectedDuration' | 'form';

/** Which field a server message is about: its messages start with the field's name. */
function fieldOf(message: string): Field {
  const m = message.toLowerCase();
  if (m.startsWith('args')) return 'args';
  if (m.startsWith('config')) return 'config';
  if (m.startsWith('url')) return 'url';
  if (m.startsWith('priority')) return 'priority';
  if (m.startsWith('retries')) return 'retries';
  if (m.startsWith('notbefore')) return 'notBefore';
  if (m.startsWith('expireaftersecs')) return 'expireAfter';
  if (m.startsWith('deadline')) return 'deadline';
  if (m.startsWith('expecteddurationsecs')) return 'expectedDuration';
  return 'form';
}

/** A number as typed (decimals allowed); anything else goes to the server as typed. */
function decimal(text: string): number | string | undefined {
  const t = text.trim();
  if (!t) return undefined;
  return /^-?(\d+\.?\d*|\.\d+)$/.test(t) ? Number(t) : t;
}

/** A `datetime-local` value (a local time without a zone) as the instant it names. */
function instant(local: string): string | null {
  const at = new Date(local);
  return Number.isNaN(at.getTime()) ? null : at.toISOString();
}

/** A whole number as typed; anything else goes to the server as typed, which says why. */
function whole(text: string): number | string | undefined {
  const t = text.trim();
  if (!t) return undefined;
  return /^-?\d+$/.test(t) ? Number(t) : t;
}

export function SubmitPage() {
  const [url, setUrl] = useState('');
  const [args, setArgs] = useState('');
  const [config, setConfig] = useState('');
  const [priority, setPriority] = useState('');
  const [retries, setRetries] = useState('');
  const [notBefore, setNotBefore] = useState('');
  const [expireAfter, setExpireAfter] = useState('');
  const [deadline, setDeadline] = useState('');
  const [expectedDuration, setExpectedDuration] = useState('');
  const [errors, setErrors] = useState<Partial<Record<Field, string>>>({});
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    const found: Partial<Record<Field, string>> = {};
    if (!url.trim()) found.url = 'url is required';
    const t = config.trim();
    if (t.startsWith('{') || t.startsWith('[')) {
      try {
        JSON.parse(t);
      } catch (err) {
        found.config = `config looks like JSON but is not: ${(err as Error).message}`;
      }
    }
    const body: SubmitBody = { url: url.trim(), args, config };
    const p = whole(priority);
    if (p !== undefined) body.priority = p;
    const r = whole(retries);
    if (r !== undefined) body.retries = r;
    const x = whole(expireAfter);
    if (x !== undefined) body.expireAfterSecs = x;
    if (notBefore) {
      // The picker's value is a local time without a zone: sent as the instant it names.
      const at = instant(notBefore);
      if (at === null) found.notBefore = 'notBefore is not a date and time';
      else body.notBefore = at;
    }
    if (deadline) {
      const at = instant(deadline);
      if (at === null) found.deadline = 'deadline is not a date and time';
      else body.deadline = at;
    }
    const d = decimal(expectedDuration);
    if (d !== undefined) body.expectedDurationSecs = d;
    setErrors(found);
    if (Object.keys(found).length) return;
    setBusy(true);
    try {
      const job = await api.submit(body);
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      const message = (err as Error).message;
      setErrors({ [err instanceof ApiError ? fieldOf(message) : 'form']: message });
    } finally {
      setBusy(false);
    }
  };

  const described = (f: Field) => (errors[f] ? `${f}-error` : `${f}-help`);
  const invalid = (f: Field) => (errors[f] ? 'true' : undefined);
  const hint = (f: Field, help: ComponentChildren) =>
    errors[f] ? <p id={`${f}-error`} class="field-error" role="alert">{errors[f]}</p>
      : <p id={`${f}-help`} class="help">{help}</p>;
  return (
    <section aria-labelledby="submit-title">
      <h1 id="submit-title" tabIndex={-1}>Submit a job</h1>
      <form class="submit" onSubmit={submit} noValidate>
        <label for="url">Repository URL</label>
        <input id="url" name="url" value={url} onInput={(e) => setUrl(e.currentTarget.value)} placeholder="https://github.com/you/job.git"
          aria-invalid={invalid('url')} aria-describedby={described('url')} autocomplete="off" spellcheck={false} />
        {hint('url', 'A git repository with package.json and a start script.')}

        <label for="args">Arguments</label>
        <input id="args" name="args" value={args} onInput={(e) => setArgs(e.currentTarget.value)} placeholder='Ada "Grace Hopper"'
          aria-invalid={invalid('args')} aria-describedby={described('args')} autocomplete="off" spellcheck={false} />
        {hint('args', <>Passed to <code>npm run start --</code>, split like a shell would, never run by one.</>)}

        <label for="config">Config</label>
        <textarea id="config" name="config" rows={6} value={config} onInput={(e) => setConfig(e.currentTarget.value)} placeholder='{"greeting": "Hi"}'
          aria-invalid={invalid('config')} aria-describedby={described('config')} spellcheck={false} />
        {hint('config', <>Written to <code>config.json</code> at the repository root.</>)}

        <fieldset class="schedule">
          <legend>Scheduling (optional)</legend>
          <div class="schedule-fields">
            <div>
              <label for="priority">Priority</label>
              <input id="priority" name="priority" type="number" inputMode="numeric" min={-100} max={100} step={1} value={priority}
                onInput={(e) => setPriority(e.currentTarget.value)} placeholder="0"
                aria-invalid={invalid('priority')} aria-describedby={described('priority')} />
              {hint('priority', 'From -100 to 100; higher runs first while jobs wait.')}
            </div>
            <div>
              <label for="retries">Retries</label>
              <input id="retries" name="retries" type="number" inputMode="numeric" min={0} step={1} value={retries}
                onInput={(e) => setRetries(e.currentTarget.value)} placeholder="0"
                aria-invalid={invalid('retries')} aria-describedby={described('retries')} />
              {hint('retries', 'Extra attempts after a failed run, each after a growing pause.')}
            </div>
            <div>
              <label for="notBefore">Not before</label>
              <input id="notBefore" name="notBefore" type="datetime-local" step={1} value={notBefore}
                onInput={(e) => setNotBefore(e.currentTarget.value)}
                aria-invalid={invalid('notBefore')} aria-describedby={described('notBefore')} />
              {hint('notBefore', 'Your local time; the job waits until then.')}
            </div>
            <div>
              <label for="expireAfter">Expire after (seconds)</label>
              <input id="expireAfter" name="expireAfter" type="number" inputMode="numeric" min={1} step={1} value={expireAfter}
                onInput={(e) => setExpireAfter(e.currentTarget.value)} placeholder="600"
                aria-invalid={invalid('expireAfter')} aria-describedby={described('expireAfter')} />
              {hint('expireAfter', 'A job still waiting that long is cancelled (expired) and never starts.')}
            </div>
            <div>
              <label for="deadline">Deadline</label>
              <input id="deadline" name="deadline" type="datetime-local" step={1} value={deadline}
                onInput={(e) => setDeadline(e.currentTarget.value)}
                aria-invalid={invalid('deadline')} aria-describedby={described('deadline')} />
              {hint('deadline', 'Finish by, your local time: waiting jobs with a deadline go earliest deadline first within their priority.')}
            </div>
            <div>
              <label for="expectedDuration">Expected run (seconds)</label>
              <input id="expectedDuration" name="expectedDuration" type="number" inputMode="decimal" min={0} step="any" value={expectedDuration}
                onInput={(e) => setExpectedDuration(e.currentTarget.value)} placeholder="30"
                aria-invalid={invalid('expectedDuration')} aria-describedby={described('expectedDuration')} />
              {hint('expectedDuration', 'How long a run takes, for the estimates; without it the time learned for the repository.')}
            </div>
          </div>
        </fieldset>

        {errors.form && <p class="error" role="alert">{errors.form}</p>}
        <button type="submit" disabled={busy}>{busy ? 'Submitting…' : 'Submit'}</button>
      </form>
    </section>
  );
}
