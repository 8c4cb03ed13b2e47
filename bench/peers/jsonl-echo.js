// A jsonl worker that answers each call with its input (compare process).
const readline = require("node:readline");
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const req = JSON.parse(line);
  if (req.cancel) return;
  process.stdout.write(JSON.stringify({ id: req.id, output: req.input }) + "\n");
});
