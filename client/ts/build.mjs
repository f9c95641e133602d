// Builds the publishable package into pkg/ (or the folder given with --out):
// ESM JavaScript bundled by esbuild (the generated API included, the
// @bufbuild and @connectrpc runtimes left as dependencies) and declarations
// by tsc. In this repository the workspace uses src/ directly; `npm pack pkg`
// makes the tarball a project outside it installs.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const i = process.argv.indexOf("--out");
const out = i > 0 ? resolve(process.argv[i + 1]) : join(here, "pkg");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const src = JSON.parse(readFileSync(join(here, "package.json"), "utf8"));
const entries = ["index", "web", "node"];
await build({
  entryPoints: entries.map((e) => join(here, "src", `${e}.ts`)),
  bundle: true,
  splitting: true, // one copy of the shared code, so instanceof works across entry points
  format: "esm",
  platform: "neutral",
  target: "es2022",
  external: ["@bufbuild/*", "@connectrpc/*", "node:*"],
  outdir: join(out, "dist"),
  logLevel: "warning",
});
execFileSync(
  process.execPath,
  [
    join(here, "..", "..", "node_modules", "typescript", "bin", "tsc"),
    "-p",
    join(here, "tsconfig.build.json"),
    "--outDir",
    join(out, "types"),
  ],
  { stdio: "inherit" },
);
const types = (e) => `./types/client/ts/src/${e}.d.ts`;
const exp = (e) => ({ types: types(e), default: `./dist/${e}.js` });
writeFileSync(
  join(out, "package.json"),
  `${JSON.stringify(
    {
      name: src.name,
      version: src.version,
      description: src.description,
      license: src.license,
      type: "module",
      sideEffects: false,
      exports: { ".": exp("index"), "./web": exp("web"), "./node": exp("node") },
      types: types("index"),
      dependencies: src.dependencies,
    },
    null,
    2,
  )}\n`,
);
copyFileSync(join(here, "README.md"), join(out, "README.md"));
