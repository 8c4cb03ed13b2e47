// A toolplane jsonl worker that answers calls in any order, as they finish.
const readline = require("node:readline");
const worker = require("node:crypto").randomInt(2 ** 47); // which process answered
const timers = new Map(); // call id -> timer, so a cancel can stop (and answer) it

function answer(msg) {
  process.stdout.write(JSON.stringify(msg) + "\n");
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const req = JSON.parse(line);
  if (req.cancel) return timers.has(req.id) && (clearTimeout(timers.get(req.id)), timers.delete(req.id), answer({ id: req.id, error: "cancelled" }));
  const ms = req.input.ms;
  if (!Number.isInteger(ms) || ms < 0) return answer({ id: req.id, error: "ms: a non-negative integer" });
  timers.set(req.id, setTimeout(() => (timers.delete(req.id), answer({ id: req.id, output: { slept: ms, worker } })), ms));
});
