// The dashboard in a real browser: Debian's chromium, headless, driven by playwright-core,
// against a running jobq with ONE job slot (so a second job waits in the queue):
//
//   JOBQ_URL=http://127.0.0.1:PORT JOBQ_MODE=standalone|services \
//   HELLO_URL=file:///… TICKER_URL=file:///… OUT_DIR=… node tests/browser.mjs
//
// scripts/browser-test.sh starts the stack and sets these. Every step either passes or
// throws; the process exits 1 on the first failure and 0 only when every step ran.
// Screenshots of each page go to OUT_DIR.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const need = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`browser.mjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
};
const base = need('JOBQ_URL').replace(/\/$/, '');
const mode = need('JOBQ_MODE');
const helloUrl = need('HELLO_URL');
const tickerUrl = need('TICKER_URL');
const outDir = need('OUT_DIR');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
mkdirSync(outDir, { recursive: true });

const LAPTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
const results = [];
let current = '';

function step(name) {
  current = name;
  console.log(`browser [${mode}]: ${name}`);
}
function check(ok, message) {
  if (!ok) throw new Error(message);
}
async function shot(page, name) {
  const file = join(outDir, `${mode}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  results.push(file);
}

async function signIn(page, user, password) {
  await page.goto(`${base}/`);
  if (mode === 'standalone') {
    await page.getByLabel('User name').fill(user);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
  } else {
    await page.getByRole('button', { name: 'Sign in with your account' }).click();
    // Keycloak's own login page, on its own origin.
    await page.waitForURL(/\/realms\/jobq\/protocol\/openid-connect\/auth/, { timeout: 20_000 });
    await page.locator('#username').waitFor();
    if (user === 'myuser') await shot(page, 'keycloak-login');
    await page.locator('#username').fill(user);
    await page.locator('#password').fill(password);
    await page.locator('#kc-login').click();
    await page.waitForURL((u) => u.href.startsWith(base), { timeout: 20_000 });
  }
  await page.getByTestId('user').filter({ hasText: user }).waitFor({ timeout: 20_000 });
  await page.getByTestId('live-state').filter({ hasText: 'live' }).waitFor({ timeout: 20_000 });
}

async function submit(page, url, args, config) {
  await page.getByRole('link', { name: 'Submit', exact: true }).click();
  await page.getByLabel('Repository URL').fill(url);
  await page.getByLabel('Arguments').fill(args);
  await page.getByLabel('Config').fill(config);
  await page.getByRole('button', { name: 'Submit' }).click();
  await page.getByTestId('job-page').waitFor();
  const id = await page.getByTestId('job-page').getAttribute('data-job');
  check(id && /^[0-9a-f-]{36}$/.test(id), `no job id on the job page (${id})`);
  return id;
}

const statusOf = (page) => page.getByTestId('job-status').locator('[data-status]').getAttribute('data-status');

async function waitForStatus(page, status, timeout = 30_000) {
  await page.getByTestId('job-status').locator(`[data-status="${status}"]`).waitFor({ timeout });
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Root in CI: chromium's own sandbox needs an unprivileged user.
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
let exitCode = 1;
try {
  const alice = await browser.newContext({ viewport: LAPTOP, acceptDownloads: true });
  const page = await alice.newPage();
  page.on('pageerror', (e) => console.error(`browser [${mode}]: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') console.error(`browser [${mode}]: console: ${m.text()}`);
  });

  step('the sign-in page is served at /');
  await page.goto(`${base}/`);
  await page.getByRole('heading', { name: 'Sign in to jobq' }).waitFor();
  await shot(page, 'signin');

  step('sign in as myuser');
  await signIn(page, 'myuser', '1234');
  await page.evaluate(() => {
    window.__jobqNoReload = true;
  });
  await page.getByRole('heading', { name: 'Jobs' }).waitFor();

  step('the server refuses a bad URL and the form shows why beside the field');
  await page.getByRole('link', { name: 'Submit', exact: true }).click();
  await page.getByLabel('Repository URL').fill('ext::sh -c evil');
  await page.getByRole('button', { name: 'Submit' }).click();
  const urlError = page.locator('#url-error');
  await urlError.waitFor();
  check((await urlError.textContent()).startsWith('url'), `unexpected url error: ${await urlError.textContent()}`);
  check((await page.getByLabel('Repository URL').getAttribute('aria-invalid')) === 'true', 'the url field is not marked invalid');
  await shot(page, 'submit');
  await page.getByLabel('Config').fill('{"greeting": ');
  await page.getByRole('button', { name: 'Submit' }).click();
  await page.locator('#config-error').waitFor();

  step('a running job: its log arrives live, stdout and stderr apart');
  const ticker = await submit(page, tickerUrl, '6', '');
  await waitForStatus(page, 'running');
  await page.getByTestId('log').locator('[data-stream="stdout"]', { hasText: 'tick 3' }).waitFor({ timeout: 20_000 });
  check((await statusOf(page)) === 'running', 'the log was not read while the job ran');
  await page.getByTestId('log').locator('[data-stream="stderr"]', { hasText: 'ticker:' }).waitFor();
  check((await page.getByTestId('log-state').textContent()).includes('live'), 'the log is not marked live');
  await shot(page, 'job-running');

  step('the example job waits behind it: queued → running → finished without a reload');
  const hello = await submit(page, helloUrl, 'Ada Linus', '{"greeting": "Hi"}');
  check((await statusOf(page)) === 'queued', `the example job should wait for the only slot, but is ${await statusOf(page)}`);
  // It runs for well under a second, so the badge may say "running" only briefly: the
  // history keeps every transition that arrived on the live stream.
  const timeline = page.getByTestId('timeline');
  await timeline.locator('li[data-to="running"][data-live="true"]').waitFor({ timeout: 30_000 });
  await waitForStatus(page, 'finished', 30_000);
  await timeline.locator('li[data-to="finished"][data-live="true"]').waitFor({ timeout: 10_000 });
  const seen = await page.getByTestId('timeline').locator('li').evaluateAll((items) =>
    items.map((li) => `${li.dataset.to}:${li.dataset.live}`),
  );
  check(seen.includes('running:true') && seen.includes('finished:true'), `the transitions did not arrive live: ${seen}`);
  check(await page.evaluate(() => window.__jobqNoReload === true), 'the page was reloaded');
  check((await page.getByTestId('exit-code').textContent()).trim() === '0', 'exit code is not 0');

  step('download an output file');
  const [file] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Download greetings/Ada.txt' }).click(),
  ]);
  const saved = join(outDir, `${mode}-Ada.txt`);
  await file.saveAs(saved);
  const text = readFileSync(saved, 'utf8');
  check(text === 'Hi, Ada!\n', `downloaded ${JSON.stringify(text)}`);
  await shot(page, 'job-finished');

  step('the scheduling fields: refused beside the field, shown on a delayed job that waits until cancelled');
  await page.getByRole('link', { name: 'Submit', exact: true }).click();
  await page.getByLabel('Repository URL').fill(helloUrl);
  await page.getByLabel('Priority').fill('101');
  await page.getByRole('button', { name: 'Submit' }).click();
  const priorityError = page.locator('#priority-error');
  await priorityError.waitFor();
  check((await priorityError.textContent()).startsWith('priority'), `unexpected priority error: ${await priorityError.textContent()}`);
  check((await page.getByLabel('Priority').getAttribute('aria-invalid')) === 'true', 'the priority field is not marked invalid');
  // An hour from now, as the picker shows a local time (seconds included: step 1).
  const later = await page.evaluate(() => {
    const d = new Date(Date.now() + 3600 * 1000);
    d.setMilliseconds(0);
    const pad = (n) => String(n).padStart(2, '0');
    const local = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return { local, at: d.getTime() };
  });
  await page.getByLabel('Priority').fill('7');
  await page.getByLabel('Retries').fill('2');
  await page.getByLabel('Not before').fill(later.local);
  await page.getByLabel('Expire after (seconds)').fill('7200');
  await shot(page, 'submit-scheduled');
  await page.getByRole('button', { name: 'Submit' }).click();
  await page.getByTestId('job-page').waitFor();
  const delayed = await page.getByTestId('job-page').getAttribute('data-job');
  check((await statusOf(page)) === 'queued', `the delayed job is ${await statusOf(page)}`);
  check((await page.getByTestId('priority').textContent()).trim() === '7', 'the priority is not shown');
  check((await page.getByTestId('retries').textContent()).trim() === '2', 'the retries are not shown');
  const shownNotBefore = await page.getByTestId('not-before').locator('time').getAttribute('datetime');
  check(Date.parse(shownNotBefore) === later.at, `notBefore ${shownNotBefore} is not the time picked (${new Date(later.at).toISOString()})`);
  const shownExpiry = Date.parse(await page.getByTestId('expires-at').locator('time').getAttribute('datetime'));
  check(Math.abs(shownExpiry - (Date.now() + 7200 * 1000)) < 60_000, `expiresAt ${new Date(shownExpiry).toISOString()} is not about 2 h from now`);
  await page.getByTestId('no-attempts').waitFor();
  await shot(page, 'job-delayed');
  await page.getByRole('button', { name: 'Cancel job' }).click();
  await waitForStatus(page, 'cancelled', 10_000);

  step('deadlines: a job waiting behind a running one shows its deadline, expected run, estimated start and finish, and a tight one is flagged at risk');
  const blocker = await submit(page, tickerUrl, '40', '');
  await waitForStatus(page, 'running', 30_000);
  const localIn = (secs) => page.evaluate((s) => {
    const d = new Date(Date.now() + s * 1000);
    d.setMilliseconds(0);
    const pad = (n) => String(n).padStart(2, '0');
    const local = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return { local, at: d.getTime() };
  }, secs);
  const submitWithDeadline = async (deadline, expected) => {
    await page.getByRole('link', { name: 'Submit', exact: true }).click();
    await page.getByLabel('Repository URL').fill(helloUrl);
    await page.getByLabel('Arguments').fill('Ada');
    await page.getByLabel('Deadline').fill(deadline.local);
    await page.getByLabel('Expected run (seconds)').fill(String(expected));
    await page.getByRole('button', { name: 'Submit' }).click();
    await page.getByTestId('job-page').waitFor();
    return page.getByTestId('job-page').getAttribute('data-job');
  };
  // A deadline in the past is refused beside the field.
  await page.getByRole('link', { name: 'Submit', exact: true }).click();
  await page.getByLabel('Repository URL').fill(helloUrl);
  await page.getByLabel('Deadline').fill((await localIn(-3600)).local);
  await page.getByRole('button', { name: 'Submit' }).click();
  const deadlineError = page.locator('#deadline-error');
  await deadlineError.waitFor();
  check((await deadlineError.textContent()).startsWith('deadline'), `unexpected deadline error: ${await deadlineError.textContent()}`);
  const loose = await localIn(3600);
  const onTime = await submitWithDeadline(loose, 5);
  check((await statusOf(page)) === 'queued', `the deadline job should wait behind the ticker, but is ${await statusOf(page)}`);
  const shownDeadline = await page.getByTestId('deadline').locator('time').getAttribute('datetime');
  check(Date.parse(shownDeadline) === loose.at, `deadline ${shownDeadline} is not the time picked (${new Date(loose.at).toISOString()})`);
  check((await page.getByTestId('expected-duration').textContent()).trim() === '5.0 s', `expected run: ${await page.getByTestId('expected-duration').textContent()}`);
  // The observer plans every period (1 s here); the page re-reads the job while it waits.
  const startTime = page.getByTestId('estimated-start').locator('time');
  await startTime.waitFor({ timeout: 20_000 });
  // The submit's answer may come from a plan made before the job (the observer's newest);
  // the page's next reads have one that includes it.
  await page.locator('[data-testid="deadline-risk"][data-at-risk="false"]').waitFor({ timeout: 20_000 });
  const estStart = Date.parse(await startTime.getAttribute('datetime'));
  const estFinish = Date.parse(await page.getByTestId('estimated-finish').locator('time').getAttribute('datetime'));
  check(estStart >= Date.now() - 2000 && estStart <= loose.at, `estimated start ${new Date(estStart).toISOString()} is not between now and the deadline`);
  check(Math.abs(estFinish - estStart - 5000) < 1500, `estimated finish ${new Date(estFinish).toISOString()} is not the start plus the expected 5 s`);
  await shot(page, 'job-deadline');
  const tight = await localIn(60);
  const late = await submitWithDeadline(tight, 3600);
  await page.getByTestId('deadline-risk').locator('text=at risk').waitFor({ timeout: 20_000 });
  check((await page.getByTestId('deadline-risk').getAttribute('data-at-risk')) === 'true', 'a job expected to run an hour is not at risk of a deadline in a minute');
  await shot(page, 'job-deadline-at-risk');
  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  await page.locator(`tr[data-job="${onTime}"] [data-testid="estimated-start"] time`).waitFor({ timeout: 10_000 });
  await page.locator(`tr[data-job="${late}"] [data-at-risk="true"]`).waitFor({ timeout: 10_000 });
  await shot(page, 'jobs-deadlines');
  const cancelled = await page.evaluate(async (ids) => {
    const token = JSON.parse(sessionStorage.getItem('jobq.session')).token;
    const out = [];
    for (const id of ids) {
      const r = await fetch(`/api/v1/jobs/${id}`, { method: 'DELETE', headers: { Authorization: `Bearer ${token}` } });
      out.push((await r.json()).status);
    }
    return out;
  }, [onTime, late, blocker]);
  check(cancelled.every((st) => st === 'cancelled'), `cancelling the deadline jobs and the ticker answered ${cancelled}`);

  step('a failing job with a retry: queued again, then both attempts listed with their outcome and reason');
  // A name with a slash makes the example job fail (it cannot write output/greetings/no/such.txt).
  await page.getByRole('link', { name: 'Submit', exact: true }).click();
  await page.getByLabel('Repository URL').fill(helloUrl);
  await page.getByLabel('Arguments').fill('no/such');
  await page.getByLabel('Retries').fill('1');
  await page.getByRole('button', { name: 'Submit' }).click();
  await page.getByTestId('job-page').waitFor();
  const failing = await page.getByTestId('job-page').getAttribute('data-job');
  check(failing !== delayed, 'the failing job is the delayed one');
  await waitForStatus(page, 'failed', 60_000);
  const attempts = page.getByTestId('attempts').locator('tbody tr');
  await attempts.nth(1).waitFor({ timeout: 10_000 });
  const rowsSeen = await attempts.evaluateAll((trs) => trs.map((tr) => ({
    attempt: tr.dataset.attempt,
    outcome: tr.dataset.outcome,
    cells: [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()),
  })));
  check(rowsSeen.length === 2, `${rowsSeen.length} attempts listed: ${JSON.stringify(rowsSeen)}`);
  rowsSeen.forEach((row, i) => {
    check(row.attempt === String(i + 1) && row.outcome === 'failed', `attempt row ${i}: ${JSON.stringify(row)}`);
    check(row.cells[1] !== '—' && row.cells[2] !== '—' && row.cells[3] !== '—', `attempt ${i + 1} lacks its worker or times: ${JSON.stringify(row)}`);
    check(row.cells[5] !== '—' && row.cells[5].length > 0, `attempt ${i + 1} has no reason: ${JSON.stringify(row)}`);
  });
  check((await page.getByTestId('retries').textContent()).trim() === '1', 'the retries are not shown');
  await shot(page, 'job-retried');

  step('cancel a running job');
  const long = await submit(page, tickerUrl, '60', '');
  await waitForStatus(page, 'running', 30_000);
  await page.getByTestId('log').locator('[data-stream="stdout"]', { hasText: 'tick 2' }).waitFor({ timeout: 20_000 });
  await page.getByRole('button', { name: 'Cancel job' }).click();
  await waitForStatus(page, 'cancelled', 10_000);
  await page.getByTestId('log-state').filter({ hasText: 'complete' }).waitFor({ timeout: 15_000 });
  const after = await page.evaluate(async (id) => {
    const token = JSON.parse(sessionStorage.getItem('jobq.session')).token;
    const r = await fetch(`/api/v1/jobs/${id}`, { headers: { Authorization: `Bearer ${token}` } });
    return (await r.json()).status;
  }, long);
  check(after === 'cancelled', `the server says the cancelled job is ${after}`);

  step('the jobs page lists them, filters by status, pages, and keeps up live');
  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  const rows = page.getByTestId('jobs-table').locator('tbody tr');
  await rows.first().waitFor();
  for (const id of [ticker, hello, long]) {
    await page.locator(`tr[data-job="${id}"]`).waitFor();
  }
  await page.getByLabel('Status').selectOption('cancelled');
  await page.locator(`tr[data-job="${hello}"]`).waitFor({ state: 'detached', timeout: 10_000 });
  await page.locator(`tr[data-job="${long}"]`).waitFor();
  const shown = await page.getByTestId('jobs-table').locator('tbody [data-status]').evaluateAll((els) => els.map((e) => e.dataset.status));
  check(shown.length > 0 && shown.every((st) => st === 'cancelled'), `the cancelled filter shows ${shown}`);
  await page.getByLabel('Status').selectOption('');
  const live = await submit(page, tickerUrl, '2', '');
  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  const liveRow = page.locator(`tr[data-job="${live}"] [data-status]`);
  await page.locator(`tr[data-job="${live}"] [data-status="finished"]`).waitFor({ timeout: 30_000 });
  check((await liveRow.getAttribute('data-status')) === 'finished', 'the list did not follow the job');
  check(await page.evaluate(() => window.__jobqNoReload === true), 'the page was reloaded');
  await shot(page, 'jobs');

  step('the fleet charts draw points from the stored observations');
  await page.getByRole('link', { name: 'Fleet', exact: true }).click();
  const rates = page.getByTestId('chart-rates');
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="chart-rates"]')?.dataset.points) >= 3, null, { timeout: 30_000 });
  for (const chart of ['chart-rates', 'chart-depth', 'chart-wait', 'chart-workers']) {
    const drawn = await page.getByTestId(chart).locator('canvas').evaluate((canvas) => {
      const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
      let coloured = 0;
      for (let i = 0; i < data.length; i += 4) {
        const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
        if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 40) coloured++;
      }
      return coloured;
    });
    check(drawn > 20, `${chart} has no drawn series (${drawn} coloured pixels)`);
  }
  const arrivals = await page.evaluate(async () => {
    const token = JSON.parse(sessionStorage.getItem('jobq.session')).token;
    const r = await fetch('/api/v1/observations?limit=5000', { headers: { Authorization: `Bearer ${token}` } });
    return (await r.json()).reduce((sum, o) => sum + o.avgRateOfArrival, 0);
  });
  check(arrivals > 0, 'no observation counted an arrival of the jobs submitted');
  await page.getByTestId('policy').waitFor();
  check(Number(await rates.getAttribute('data-points')) >= 3, 'too few points');
  await shot(page, 'fleet');

  step('a phone-width window shows the jobs');
  await page.setViewportSize(PHONE);
  await page.getByRole('link', { name: 'Jobs', exact: true }).click();
  await page.locator(`tr[data-job="${hello}"]`).waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the page is ${overflow}px wider than a phone`);
  await shot(page, 'jobs-phone');
  await page.goto(`${base}/#/jobs/${hello}`);
  await waitForStatus(page, 'finished');
  await shot(page, 'job-phone');

  step("a second user sees none of the first user's jobs");
  const bob = await browser.newContext({ viewport: LAPTOP });
  const other = await bob.newPage();
  await signIn(other, 'otheruser', 'abcd');
  await other.getByRole('heading', { name: 'Jobs' }).waitFor();
  await other.getByTestId('jobs-table').waitFor();
  await other.waitForTimeout(500);
  for (const id of [ticker, hello, long, live]) {
    check((await other.locator(`tr[data-job="${id}"]`).count()) === 0, `otheruser sees ${id}`);
  }
  await other.goto(`${base}/#/jobs/${hello}`);
  await other.getByRole('alert').filter({ hasText: 'job not found' }).waitFor();

  step("an admin shows every user's jobs, with their owner");
  const root = await browser.newContext({ viewport: LAPTOP });
  const admin = await root.newPage();
  await signIn(admin, 'admin', 'admin');
  await admin.getByTestId('user').filter({ hasText: '(admin)' }).waitFor();
  await admin.getByLabel("every user's jobs").check();
  const row = admin.locator(`tr[data-job="${hello}"]`);
  await row.waitFor();
  check((await row.locator('td').nth(1).textContent()).trim() === 'myuser', 'the owner column does not name myuser');
  await root.close();

  step('signing out ends the session (at Keycloak too: the next sign-in asks again)');
  await other.getByRole('button', { name: 'Sign out' }).click();
  await other.getByRole('heading', { name: 'Sign in to jobq' }).waitFor({ timeout: 20_000 });
  check(await other.evaluate(() => sessionStorage.getItem('jobq.session') === null), 'the token is still stored');
  if (mode === 'services') {
    await other.getByRole('button', { name: 'Sign in with your account' }).click();
    await other.locator('#username').waitFor({ timeout: 20_000 });
  }
  await bob.close();
  await alice.close();

  writeFileSync(join(outDir, `${mode}-passed`), `${new Date().toISOString()}\n`);
  console.log(`browser [${mode}]: all steps passed; screenshots:\n  ${results.join('\n  ')}`);
  exitCode = 0;
} catch (e) {
  console.error(`browser [${mode}]: FAILED at "${current}": ${e.stack ?? e}`);
  let n = 0;
  for (const context of browser.contexts()) {
    for (const p of context.pages()) {
      n += 1;
      const file = join(outDir, `${mode}-failure-${n}.png`);
      console.error(`browser [${mode}]: page ${n} was at ${p.url()}; screenshot ${file}`);
      await p.screenshot({ path: file, fullPage: true }).catch(() => {});
    }
  }
} finally {
  await browser.close();
}
process.exit(exitCode);
