// A jobq job: the worker has written config.json (the job's `config` text) next to this
// file and runs `npm run start -- <args>`. Everything written under output/ is kept.
const fs = require('fs');
const path = require('path');

const text = fs.existsSync('config.json') ? fs.readFileSync('config.json', 'utf8') : '';
let config = {};
try {
  config = text.trim() ? JSON.parse(text) : {};
} catch (e) {
  console.error(`config.json is not JSON (${e.message}); using it as a greeting`);
  config = { greeting: text.trim() };
}
const args = process.argv.slice(2);
const greeting = config.greeting || 'Hello';
const names = args.length ? args : ['world'];

fs.mkdirSync(path.join('output', 'greetings'), { recursive: true });
for (const name of names) {
  fs.writeFileSync(path.join('output', 'greetings', `${name}.txt`), `${greeting}, ${name}!\n`);
}
fs.writeFileSync(
  path.join('output', 'summary.json'),
  JSON.stringify({ greeting, names, at: new Date().toISOString() }, null, 2) + '\n',
);
console.log(`${greeting} to ${names.length} name(s): ${names.join(', ')}`);
