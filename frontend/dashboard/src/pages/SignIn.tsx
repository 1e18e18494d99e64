// Sign-in: the built-in issuer's form, or a button to the identity provider's login page.

import { useEffect, useState } from 'preact/hooks';

import { SignInConfig, signInConfig, signInWithPassword, signInWithProvider, takeNotice } from '../auth';

export function SignInPage(props: { error?: string }) {
  const [config, setConfig] = useState<SignInConfig | null>(null);
  const [error, setError] = useState(props.error ?? '');
  const [notice] = useState(takeNotice());
  const [busy, setBusy] = useState(false);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');

  useEffect(() => {
    signInConfig().then(setConfig, (e) => setError(String(e.message ?? e)));
  }, []);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      if (config?.method === 'oidc') await signInWithProvider();
      else await signInWithPassword(username, password);
    } catch (err) {
      setError(String((err as Error).message ?? err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="signin" id="main">
      <form onSubmit={submit} aria-describedby={error ? 'signin-error' : undefined}>
        <h1 tabIndex={-1}>Sign in to jobq</h1>
        {notice && <p class="notice">{notice}</p>}
        {config?.method === 'form' && (
          <>
            <label for="username">User name</label>
            <input id="username" name="username" autocomplete="username" required value={username}
              onInput={(e) => setUsername(e.currentTarget.value)} />
            <label for="password">Password</label>
            <input id="password" name="password" type="password" autocomplete="current-password" required
              value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
          </>
        )}
        {config?.method === 'oidc' && <p>You sign in on your organisation's login page.</p>}
        {error && <p id="signin-error" class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy || !config}>
          {config?.method === 'oidc' ? 'Sign in with your account' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
