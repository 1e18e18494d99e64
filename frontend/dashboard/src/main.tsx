// The jobq dashboard: sign-in, jobs, submit, one job, fleet. Routes live in the URL's
// hash (#/jobs, #/jobs/ID, #/submit, #/fleet), so the server serves one page and the
// identity provider can redirect back to `/`.

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';

import { api, Me, onLiveState, stopJobEvents } from './api';
import { completeRedirect, currentToken, onSessionChange, signOut } from './auth';
import { FleetPage } from './pages/Fleet';
import { JobPage } from './pages/Job';
import { JobsPage } from './pages/Jobs';
import { SignInPage } from './pages/SignIn';
import { SubmitPage } from './pages/Submit';
import './style.css';

function useHash(): string {
  const [hash, setHash] = useState(location.hash || '#/jobs');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/jobs');
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function LiveBadge() {
  const [connected, setConnected] = useState(false);
  useEffect(() => onLiveState(setConnected), []);
  return (
    <span class={`live ${connected ? 'on' : 'off'}`} role="status" aria-live="polite" data-testid="live-state">
      {connected ? 'live' : 'offline'}
    </span>
  );
}

function App() {
  const [token, setToken] = useState(currentToken());
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState('');
  const [finishing, setFinishing] = useState(new URLSearchParams(location.search).has('code'));
  const hash = useHash();

  useEffect(() => onSessionChange(() => setToken(currentToken())), []);
  useEffect(() => {
    if (!finishing) return;
    completeRedirect()
      .then((back) => {
        if (back) location.hash = back;
      })
      .catch((e) => setError(String(e.message ?? e)))
      .finally(() => setFinishing(false));
  }, []);
  useEffect(() => {
    if (!token) {
      setMe(null);
      stopJobEvents();
      return;
    }
    api.me().then(setMe, () => setMe(null));
  }, [token]);

  // Move focus to the page's heading when the page changes, for keyboard and screen-reader users.
  useEffect(() => {
    document.querySelector<HTMLElement>('main h1')?.focus();
  }, [hash, token]);

  if (finishing) return <p class="centered">Signing in…</p>;
  if (!token) return <SignInPage error={error} />;

  const [, page, id] = hash.split('/');
  let content;
  if (page === 'jobs' && id) content = <JobPage id={decodeURIComponent(id)} me={me} />;
  else if (page === 'submit') content = <SubmitPage />;
  else if (page === 'fleet') content = <FleetPage />;
  else content = <JobsPage me={me} />;
  const current = page === 'jobs' && id ? 'job' : page || 'jobs';

  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>
        Skip to content
      </a>
      <header class="bar">
        <a class="brand" href="#/jobs">jobq</a>
        <nav aria-label="Pages">
          <a href="#/jobs" aria-current={current === 'jobs' ? 'page' : undefined}>Jobs</a>
          <a href="#/submit" aria-current={current === 'submit' ? 'page' : undefined}>Submit</a>
          <a href="#/fleet" aria-current={current === 'fleet' ? 'page' : undefined}>Fleet</a>
        </nav>
        <div class="who">
          <LiveBadge />
          <span data-testid="user">{me ? `${me.username}${me.admin ? ' (admin)' : ''}` : ''}</span>
          <button type="button" class="link" onClick={() => void signOut('You signed out.', true)}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {content}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
