// Generates crates/flowgrid-providers/src/llm/prices.json from the pinned @pydantic/genai-prices
// package (see package-lock.json): the models of the providers Flowgrid calls, how a model name
// matches them, and their current token prices in USD per million tokens.
//
//   node tools/ai-fakes/gen-prices.mjs            writes the table
//   node tools/ai-fakes/gen-prices.mjs --stdout   prints it (the test compares it with the file)
//
// A model's price is its latest dated price (`start_date` constraints; time-of-day prices are
// left out); tiered prices keep their tiers. Only token prices are kept (input, cached input read,
// cache write, output).
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findProvider } from '@pydantic/genai-prices';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(readFileSync(join(here, 'node_modules/@pydantic/genai-prices/package.json'), 'utf8'));
const KEYS = ['input_mtok', 'cache_read_mtok', 'cache_write_mtok', 'output_mtok'];

function current(prices) {
  if (!Array.isArray(prices)) return prices;
  const dated = prices.filter((p) => !p.constraint || p.constraint.type === 'start_date');
  dated.sort((a, b) => (a.constraint?.start_date ?? '').localeCompare(b.constraint?.start_date ?? ''));
  return dated.length ? dated[dated.length - 1].prices : null;
}

function price(value) {
  if (value === undefined) return undefined;
  if (typeof value === 'number') return value;
  return { base: value.base, tiers: value.tiers.map((t) => ({ start: t.start, price: t.price })) };
}

const providers = [];
for (const id of ['openai', 'azure', 'anthropic']) {
  const p = findProvider({ providerId: id });
  const models = [];
  for (const m of p.models) {
    const now = current(m.prices);
    if (!now) continue;
    const prices = {};
    for (const k of KEYS) if (now[k] !== undefined) prices[k] = price(now[k]);
    models.push({ id: m.id, match: m.match, prices });
  }
  providers.push({ id, models });
}
const table = { version: `${pkg.name}@${pkg.version}`, providers };
const text = JSON.stringify(table, null, 1) + '\n';
if (process.argv.includes('--stdout')) process.stdout.write(text);
else writeFileSync(join(here, '../../crates/flowgrid-providers/src/llm/prices.json'), text);
