// Signing in the way the deployment does: the built-in issuer's form (`jobq standalone`,
// POST /auth/token) or the identity provider's own login page (authorization code with
// PKCE for the realm's public client). Tokens live in sessionStorage only: closing the
// tab ends the session, and no token ever appears in a URL.

export interface SignInConfig {
  method: 'form' | 'oidc';
  authorizationEndpoint?: string;
  tokenEndpoint?: string;
  endSessionEndpoint?: string;
  clientId?: string;
  scope?: string;
}

interface Session {
  token: string;
  refreshToken?: string;
  idToken?: string;
  /** Milliseconds since the epoch. */
  expiresAt?: number;
}

const SESSION = 'jobq.session';
const PENDING = 'jobq.pkce';

let session: Session | null = load();
let config: SignInConfig | null = null;
let refreshTimer: number | undefined;
const listeners = new Set<() => void>();
let notice = '';

function load(): Session | null {
  try {
    const raw = sessionStorage.getItem(SESSION);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

function save(next: Session | null) {
  session = next;
  if (next) sessionStorage.setItem(SESSION, JSON.stringify(next));
  else sessionStorage.removeItem(SESSION);
  scheduleRefresh();
  listeners.forEach((l) => l());
}

export function currentToken(): string | null {
  return session?.token ?? null;
}

export function onSessionChange(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** A message for the sign-in page (why the last session ended). */
export function takeNotice(): string {
  const n = notice;
  notice = '';
  return n;
}

export async function signInConfig(): Promise<SignInConfig> {
  if (config) return config;
  const response = await fetch('/auth/config');
  if (!response.ok) throw new Error(`cannot reach the server (${response.status})`);
  config = (await response.json()) as SignInConfig;
  return config;
}

/** The built-in issuer: user name and password. Throws with the server's message. */
export async function signInWithPassword(username: string, password: string): Promise<void> {
  const response = await fetch('/auth/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username, password }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ?? `sign-in failed (${response.status})`);
  save({ token: body.access_token ?? body.token });
}

function base64url(bytes: Uint8Array): string {
  let text = '';
  bytes.forEach((b) => (text += String.fromCharCode(b)));
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomText(n = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(n)));
}

function redirectUri(): string {
  return `${location.origin}/`;
}

/** Sends the browser to the identity provider's login page. */
export async function signInWithProvider(): Promise<void> {
  const c = await signInConfig();
  if (c.method !== 'oidc' || !c.authorizationEndpoint || !c.clientId) throw new Error('no identity provider');
  const verifier = randomText(48);
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  const state = randomText(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, back: location.hash }));
  const q = new URLSearchParams({
    response_type: 'code',
    client_id: c.clientId,
    redirect_uri: redirectUri(),
    scope: c.scope ?? 'openid',
    state,
    code_challenge: base64url(new Uint8Array(digest)),
    code_challenge_method: 'S256',
  });
  location.assign(`${c.authorizationEndpoint}?${q}`);
}

async function tokenRequest(form: Record<string, string>): Promise<void> {
  const c = await signInConfig();
  if (!c.tokenEndpoint) throw new Error('no token endpoint');
  const response = await fetch(c.tokenEndpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.access_token) {
    throw new Error(body.error_description ?? body.error ?? `token request failed (${response.status})`);
  }
  save({
    token: body.access_token,
    refreshToken: body.refresh_token,
    idToken: body.id_token ?? session?.idToken,
    expiresAt: body.expires_in ? Date.now() + body.expires_in * 1000 : undefined,
  });
}

/**
 * Finishes a sign-in at the identity provider when the page was opened by its redirect
 * (`?code=…&state=…`): exchanges the code with the PKCE verifier, then removes the code
 * from the address bar. Returns the page to go back to, or null if there was nothing to do.
 */
export async function completeRedirect(): Promise<string | null> {
  const params = new URLSearchParams(location.search);
  const code = params.get('code');
  const error = params.get('error');
  if (!code && !error) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? 'null') as
    | { verifier: string; state: string; back: string }
    | null;
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, '', `${location.pathname}${pending?.back ?? ''}`);
  if (error) throw new Error(params.get('error_description') ?? error);
  if (!pending || pending.state !== params.get('state')) throw new Error('the sign-in answer does not match this tab; try again');
  const c = await signInConfig();
  await tokenRequest({
    grant_type: 'authorization_code',
    code: code!,
    redirect_uri: redirectUri(),
    client_id: c.clientId!,
    code_verifier: pending.verifier,
  });
  return pending.back || '#/jobs';
}

function scheduleRefresh() {
  window.clearTimeout(refreshTimer);
  if (!session?.refreshToken || !session.expiresAt) return;
  const inMs = Math.max(5_000, session.expiresAt - Date.now() - 30_000);
  refreshTimer = window.setTimeout(async () => {
    const c = await signInConfig();
    try {
      await tokenRequest({ grant_type: 'refresh_token', refresh_token: session!.refreshToken!, client_id: c.clientId! });
    } catch {
      void signOut('Your session ended; sign in again.');
    }
  }, inMs);
}
scheduleRefresh();

/**
 * Forgets the token; with `atProvider`, also ends the session at the identity provider
 * (which then sends the browser back here), so the next sign-in asks for a password again.
 */
export async function signOut(why = '', atProvider = false): Promise<void> {
  const idToken = session?.idToken;
  notice = why;
  save(null);
  if (!atProvider || !idToken) return;
  const c = await signInConfig().catch(() => null);
  if (c?.endSessionEndpoint) {
    const q = new URLSearchParams({ id_token_hint: idToken, post_logout_redirect_uri: redirectUri() });
    location.assign(`${c.endSessionEndpoint}?${q}`);
  }
}
