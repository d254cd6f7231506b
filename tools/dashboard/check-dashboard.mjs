// Opens the Analytics dashboard in Debian's headless Chromium (playwright-core, no browser
// download), waits until it has rendered, and prints what it shows as JSON: every element with
// a data-metric attribute, the rows of the agents and models tables, and whether the chart
// drew. Keeps a screenshot. Usage: node check-dashboard.mjs <page url> <screenshot path>
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, screenshot] = process.argv.slice(2);
const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "fg-chromium-")), {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1100, height: 1400 },
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(url);
  await page.waitForSelector("body[data-loaded=true]", { timeout: 20000 });
  const shown = await page.evaluate(() => {
    const metrics = {};
    for (const e of document.querySelectorAll("#windows [data-metric], #quality [data-metric], #budget [data-metric]")) {
      metrics[e.getAttribute("data-metric")] = e.textContent;
    }
    const rows = (sel, key) =>
      [...document.querySelectorAll(sel + " tbody tr")].map((tr) => {
        const r = { key: tr.getAttribute(key) };
        for (const td of tr.querySelectorAll("[data-metric]")) r[td.getAttribute("data-metric")] = td.textContent;
        return r;
      });
    return {
      metrics,
      agents: rows("#agents", "data-agent"),
      models: rows("#models", "data-model"),
      chartCanvas: !!document.querySelector("#chart-usage canvas"),
      chartPoints: window.__flowgridChart ? window.__flowgridChart.data[0].length : 0,
    };
  });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ shown, errors }));
} finally {
  await browser.close();
}
