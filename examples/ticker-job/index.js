// A jobq job that takes its time, for watching a running job: `npm run start -- SECONDS`
// prints "tick N" on stdout every 200 ms for SECONDS (default 3), a line on stderr at the
// start and the end, and writes output/ticks.txt when done.
const fs = require('fs');
const path = require('path');

const seconds = Number(process.argv[2] ?? 3);
const total = Math.max(1, Math.round((Number.isFinite(seconds) ? seconds : 3) * 5));
console.error(`ticker: ${total} ticks`);
let n = 0;
const timer = setInterval(() => {
  n += 1;
  console.log(`tick ${n}`);
  if (n >= total) {
    clearInterval(timer);
    fs.mkdirSync('output', { recursive: true });
    fs.writeFileSync(path.join('output', 'ticks.txt'), `${n} ticks\n`);
    console.error('ticker: done');
  }
}, 200);
