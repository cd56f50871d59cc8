//! `wasmpipe new --lang js|ts|python`: a stage that is a plain function in
//! `stage.js`, `stage.ts` or `stage.py`, a native test of it (node's test
//! runner, unittest), sample events with their expected outputs and a
//! `pipeline.toml` whose `plugin = "."` builds it into a component.

use super::{
    EXIT_OK, LOCAL_STATE, NewArgs, pathdiff, pipeline_toml, stage_dir, template, write_all,
};
use crate::build::{WORK_DIR, js, python};
use crate::manifest::{Name, StageKind};
use anyhow::Result;

pub(super) fn run(args: &NewArgs, name: &Name, kind: StageKind) -> Result<u8> {
    let dir = stage_dir(args, name)?;
    let t = template(kind, "unused");
    let mut files = vec![
        ("samples.jsonl", t.samples.to_string()),
        ("expected.jsonl", t.expected.to_string()),
        ("pipeline.toml", pipeline_toml(name.as_str(), kind)),
    ];
    let rel = pathdiff(&dir);
    let test_hint = match args.lang.as_str() {
        "python" => {
            files.extend([
                ("stage.py", python_stage(kind)),
                ("test_stage.py", python_test(kind)),
                // `.wasmpipe/` keeps its own list: the SDK module in it is
                // kept, so the tests run on a fresh checkout.
                (
                    ".gitignore",
                    format!("__pycache__/\n/.venv/\n{LOCAL_STATE}"),
                ),
            ]);
            // The stage's own interpreter: the system's `python3` sees the
            // system's packages, not those the stage imports. unittest, not
            // pytest: it is in every Python, and the venv has nothing else.
            format!(
                "(cd {rel} && python3 -m venv .venv)   # once: the stage's PyPI packages go there (.venv/bin/pip install NAME)\n  (cd {rel} && .venv/bin/python -m unittest)   # tests stage.py natively, with those packages"
            )
        }
        lang => {
            let ts = lang == "ts";
            let ext = if ts { "ts" } else { "js" };
            files.extend([
                ("package.json", package_json(name.as_str(), ts)),
                // `.wasmpipe/` keeps its own list (TypeScript's test loader
                // in it is kept).
                (".gitignore", format!("/node_modules/\n{LOCAL_STATE}")),
            ]);
            let (stage, test) = js_stage(kind, ts);
            if ts {
                files.extend([
                    ("stage.ts", stage),
                    ("stage.test.ts", test),
                    ("wasmpipe.d.ts", js::TYPES.to_string()),
                    ("tsconfig.json", TSCONFIG.to_string()),
                ]);
            } else {
                files.extend([("stage.js", stage), ("stage.test.js", test)]);
            }
            format!("(cd {rel} && npm test)   # tests stage.{ext} natively with node's test runner")
        }
    };
    write_all(&dir, &files)?;
    // What the native tests need before the first build.
    match args.lang.as_str() {
        "python" => write_all(
            &dir.join(WORK_DIR),
            &[
                ("wasmpipe.py", python::SDK.to_string()),
                (".gitignore", python::WORK_GITIGNORE.to_string()),
            ],
        )?,
        "ts" => write_all(
            &dir.join(WORK_DIR),
            &[
                ("ts-hooks.mjs", js::TS_HOOKS.to_string()),
                ("tsc.mjs", js::TSC.to_string()),
                (".gitignore", js::TS_WORK_GITIGNORE.to_string()),
            ],
        )?,
        _ => {}
    }
    println!(
        "created {kind} stage `{name}` ({}) in {}",
        args.lang,
        dir.display()
    );
    println!();
    println!(
        "  wasmpipe run {rel}/pipeline.toml -i {rel}/samples.jsonl   # builds the component, runs it"
    );
    println!("  wasmpipe test {rel} --input {rel}/samples.jsonl --expect {rel}/expected.jsonl");
    println!(
        "  wasmpipe run --watch {rel}/pipeline.toml -i {rel}/samples.jsonl   # edit, see it live"
    );
    println!("  {test_hint}");
    println!();
    println!(
        "Building needs {}; `wasmpipe toolchains install {}` sets it up once per machine{}.",
        if args.lang == "python" {
            format!("componentize-py {}", python::COMPONENTIZE_PY)
        } else {
            format!("Node.js 20+ and componentize-js {}", js::COMPONENTIZE_JS)
        },
        if args.lang == "python" {
            "python"
        } else {
            "js"
        },
        if args.lang == "python" {
            ""
        } else {
            " (with TypeScript and @types/node for the tests)"
        }
    );
    Ok(EXIT_OK)
}

/// The stage's package.json: its test script, and no dependencies. The
/// build tools, TypeScript and `@types/node` are installed once per machine
/// (`wasmpipe toolchains install`), not in each stage, so that `npm install
/// <package>` in a stage installs that package (a few MB), not the
/// toolchain's hundreds.
fn package_json(name: &str, ts: bool) -> String {
    let test = if ts {
        "node .wasmpipe/tsc.mjs && node --import ./.wasmpipe/ts-hooks.mjs --test stage.test.ts"
    } else {
        "node --test"
    };
    format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{
    "test": "{test}"
  }}
}}
"#
    )
}

const TSCONFIG: &str = r#"{
  "compilerOptions": {
    "target": "ES2022",
    "module": "ESNext",
    "moduleResolution": "Bundler",
    "allowImportingTsExtensions": true,
    "strict": true,
    "noEmit": true,
    "types": ["node"]
  },
  "include": ["*.ts"]
}
"#;

/// The stage and its test, in JavaScript or TypeScript.
fn js_stage(kind: StageKind, ts: bool) -> (String, String) {
    let (imports, ev, ctx, acc) = if ts {
        (
            "import type { Context } from \"./wasmpipe\";\n\ntype In = { n: number };\n\n",
            ": In",
            ": Context",
            ": number",
        )
    } else {
        ("", "", "", "")
    };
    let head = "// Build and run: `wasmpipe run pipeline.toml -i samples.jsonl`. Test: `npm test`.\n// A thrown exception makes that one event a dead letter with its message;\n// console.log goes to wasmpipe's log; ctx.params holds the manifest's params.\n";
    let (body, test) = match kind {
        StageKind::Map => (
            format!(
                "/** A `map` stage: one event in, one out. Doubles `n`. */\nexport function map(event{ev}, ctx{ctx}) {{\n  if (!Number.isSafeInteger(event.n * 2)) throw new Error(`${{event.n}} is too large to double`);\n  return {{ ...event, n: event.n * 2 }};\n}}\n"
            ),
            "test('doubles n', () => {\n  assert.deepEqual(map({ n: 21 }, ctx), { n: 42 });\n  assert.throws(() => map({ n: Number.MAX_SAFE_INTEGER }, ctx), /too large/);\n});\n",
        ),
        StageKind::Filter => (
            format!(
                "/** A `filter` stage: keeps the events it returns true for. Keeps even `n`. */\nexport function filter(event{ev}, ctx{ctx}) {{\n  return event.n % 2 === 0;\n}}\n"
            ),
            "test('keeps even numbers', () => {\n  assert.equal(filter({ n: 2 }, ctx), true);\n  assert.equal(filter({ n: 3 }, ctx), false);\n});\n",
        ),
        StageKind::FlatMap => (
            format!(
                "/** A `flatMap` stage: one event in, any number out. Counts up to `n`. */\nexport function flatMap(event{ev}, ctx{ctx}) {{\n  const n = Math.max(0, Math.min(event.n, 1000));\n  return Array.from({{ length: n }}, (_, i) => ({{ n: i }}));\n}}\n"
            ),
            "test('counts up to n', () => {\n  assert.deepEqual(flatMap({ n: 2 }, ctx), [{ n: 0 }, { n: 1 }]);\n  assert.deepEqual(flatMap({ n: -1 }, ctx), []);\n});\n",
        ),
        StageKind::Reduce => (
            format!(
                "/** A `reduce` stage: folds every event into one result. Sums `n`. */\nexport const initial = 0;\n\nexport function reduce(acc{acc}, event{ev}, ctx{ctx}) {{\n  return acc + event.n;\n}}\n\n/** Merges the partial sums of parallel workers. */\nexport function combine(a{acc}, b{acc}) {{\n  return a + b;\n}}\n"
            ),
            "test('sums', () => {\n  assert.equal(reduce(40, { n: 2 }, ctx), 42);\n  assert.equal(combine(1, 2), 3);\n});\n",
        ),
    };
    let ext = if ts { "ts" } else { "js" };
    let names = match kind {
        StageKind::Map => "map",
        StageKind::Filter => "filter",
        StageKind::FlatMap => "flatMap",
        StageKind::Reduce => "reduce, combine",
    };
    let ctx_decl = if ts {
        "const ctx: Context = { stage: 'test', params: {}, meta: {}, index: 0 };"
    } else {
        "const ctx = { stage: 'test', params: {}, meta: {}, index: 0 };"
    };
    let test_imports = if ts {
        "import type { Context } from './wasmpipe';\n"
    } else {
        ""
    };
    (
        format!("{head}{imports}{body}"),
        format!(
            "import test from 'node:test';\nimport assert from 'node:assert/strict';\n{test_imports}import {{ {names} }} from './stage.{ext}';\n\n{ctx_decl}\n\n{test}"
        ),
    )
}

fn python_stage(kind: StageKind) -> String {
    let head = "\"\"\"Build and run: `wasmpipe run pipeline.toml -i samples.jsonl`. Test: `.venv/bin/python -m unittest`.\n\nA raised exception makes that one event a dead letter with its message;\nprint goes to wasmpipe's log; ctx.params holds the manifest's params.\n\"\"\"\n\n";
    let body = match kind {
        StageKind::Map => {
            "from wasmpipe import map\n\n\n@map\ndef double(event, ctx):\n    \"\"\"A map stage: one event in, one out. Doubles `n`.\"\"\"\n    n = event[\"n\"] * 2\n    if abs(n) > 2**63 - 1:\n        raise ValueError(f\"{event['n']} is too large to double\")\n    return {**event, \"n\": n}\n"
        }
        StageKind::Filter => {
            "from wasmpipe import filter\n\n\n@filter\ndef even(event, ctx):\n    \"\"\"A filter stage: keeps the events it returns true for. Keeps even `n`.\"\"\"\n    return event[\"n\"] % 2 == 0\n"
        }
        StageKind::FlatMap => {
            "from wasmpipe import flat_map\n\n\n@flat_map\ndef count(event, ctx):\n    \"\"\"A flat_map stage: one event in, any number out. Counts up to `n`.\"\"\"\n    return [{\"n\": i} for i in range(max(0, min(event[\"n\"], 1000)))]\n"
        }
        StageKind::Reduce => {
            "from wasmpipe import reduce\n\n\ndef add(a, b):\n    \"\"\"Merges the partial sums of parallel workers.\"\"\"\n    return a + b\n\n\n@reduce(initial=0, combine=add)\ndef total(acc, event, ctx):\n    \"\"\"A reduce stage: folds every event into one result. Sums `n`.\"\"\"\n    return acc + event[\"n\"]\n"
        }
    };
    format!("{head}{body}")
}

fn python_test(kind: StageKind) -> String {
    let (imports, body) = match kind {
        StageKind::Map => (
            "from stage import double",
            "    def test_doubles(self):\n        self.assertEqual(double({\"n\": 21}, Context()), {\"n\": 42})\n        with self.assertRaisesRegex(ValueError, \"too large\"):\n            double({\"n\": 2**63 - 1}, Context())\n",
        ),
        StageKind::Filter => (
            "from stage import even",
            "    def test_keeps_even_numbers(self):\n        self.assertTrue(even({\"n\": 2}, Context()))\n        self.assertFalse(even({\"n\": 3}, Context()))\n",
        ),
        StageKind::FlatMap => (
            "from stage import count",
            "    def test_counts_up_to_n(self):\n        self.assertEqual(count({\"n\": 2}, Context()), [{\"n\": 0}, {\"n\": 1}])\n        self.assertEqual(count({\"n\": -1}, Context()), [])\n",
        ),
        StageKind::Reduce => (
            "from stage import add, total",
            "    def test_sums(self):\n        self.assertEqual(total(40, {\"n\": 2}, Context()), 42)\n        self.assertEqual(add(1, 2), 3)\n",
        ),
    };
    format!(
        "\"\"\"Tests stage.py natively: `.venv/bin/python -m unittest` (pytest runs them too).\"\"\"\n\nimport pathlib\nimport sys\nimport unittest\n\n# The SDK, which `wasmpipe new` and `wasmpipe build` keep in .wasmpipe/.\nsys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / \".wasmpipe\"))\n\nfrom wasmpipe import Context  # noqa: E402\n{imports}  # noqa: E402\n\n\nclass TestStage(unittest.TestCase):\n{body}\n\nif __name__ == \"__main__\":\n    unittest.main()\n"
    )
}
