// Submit a job: repository URL, args, config (checked as JSON when it looks like JSON),
// with the server's validation errors beside the field they are about.

import { useState } from 'preact/hooks';

import { api, ApiError } from '../api';

type Field = 'url' | 'args' | 'config' | 'form';

/** Which field a server message is about: its messages start with the field's name. */
function fieldOf(message: string): Field {
  const m = message.toLowerCase();
  if (m.startsWith('args')) return 'args';
  if (m.startsWith('config')) return 'config';
  if (m.startsWith('url')) return 'url';
  return 'form';
}

export function SubmitPage() {
  const [url, setUrl] = useState('');
  const [args, setArgs] = useState('');
  const [config, setConfig] = useState('');
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
    setErrors(found);
    if (Object.keys(found).length) return;
    setBusy(true);
    try {
      const job = await api.submit({ url: url.trim(), args, config });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      const message = (err as Error).message;
      setErrors({ [err instanceof ApiError ? fieldOf(message) : 'form']: message });
    } finally {
      setBusy(false);
    }
  };

  const described = (f: Field) => (errors[f] ? `${f}-error` : `${f}-help`);
  return (
    <section aria-labelledby="submit-title">
      <h1 id="submit-title" tabIndex={-1}>Submit a job</h1>
      <form class="submit" onSubmit={submit} noValidate>
        <label for="url">Repository URL</label>
        <input id="url" name="url" value={url} onInput={(e) => setUrl(e.currentTarget.value)} placeholder="https://github.com/you/job.git"
          aria-invalid={errors.url ? 'true' : undefined} aria-describedby={described('url')} autocomplete="off" spellcheck={false} />
        {errors.url ? <p id="url-error" class="field-error" role="alert">{errors.url}</p>
          : <p id="url-help" class="help">A git repository with package.json and a start script.</p>}

        <label for="args">Arguments</label>
        <input id="args" name="args" value={args} onInput={(e) => setArgs(e.currentTarget.value)} placeholder='Ada "Grace Hopper"'
          aria-invalid={errors.args ? 'true' : undefined} aria-describedby={described('args')} autocomplete="off" spellcheck={false} />
        {errors.args ? <p id="args-error" class="field-error" role="alert">{errors.args}</p>
          : <p id="args-help" class="help">Passed to <code>npm run start --</code>, split like a shell would, never run by one.</p>}

        <label for="config">Config</label>
        <textarea id="config" name="config" rows={6} value={config} onInput={(e) => setConfig(e.currentTarget.value)} placeholder='{"greeting": "Hi"}'
          aria-invalid={errors.config ? 'true' : undefined} aria-describedby={described('config')} spellcheck={false} />
        {errors.config ? <p id="config-error" class="field-error" role="alert">{errors.config}</p>
          : <p id="config-help" class="help">Written to <code>config.json</code> at the repository root.</p>}

        {errors.form && <p class="error" role="alert">{errors.form}</p>}
        <button type="submit" disabled={busy}>{busy ? 'Submitting…' : 'Submit'}</button>
      </form>
    </section>
  );
}
