'use strict';
// The cheapest backend a `publish` hook can have, for loadtest/bench.sh: it
// approves every hook request with {"ok":true} and does nothing else, so a
// run through it measures what the hook round trip costs the gateway.
// Node.js only, no packages.
const http = require('node:http');
const { parseArgs } = require('node:util');

const { values } = parseArgs({ options: { listen: { type: 'string', default: '127.0.0.1:0' } } });
const colon = values.listen.lastIndexOf(':');
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(values.listen.slice(colon + 1)), values.listen.slice(0, colon), () => {
  const { address, port } = server.address();
  console.log(`  hooks  http://${address}:${port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
