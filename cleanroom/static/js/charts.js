// Charts drawn with Observable Plot (vendored, pinned: static/vendor/plot-0.6.17, on d3 7.9.2).
// Plot builds SVG with DOM calls and never evaluates code, so it runs under the strict CSP.
// Each chart's data comes from the json_script beside it; the table next to it holds the same
// numbers, for screen readers and for pages without JavaScript.
(function () {
  if (typeof Plot === "undefined") return;
  const ACCENT = "#1f5fbf";
  const MUTED = "#8a94a3";
  const BAD = "#b3261e";

  function width(canvas) {
    return Math.max(320, Math.min(720, canvas.clientWidth || 640));
  }

  // Results: each group's released value with its 95 % interval as an error bar.
  function result(data, canvas) {
    const points = data.points;
    return Plot.plot({
      className: "cr-plot",
      width: width(canvas),
      height: 300,
      marginLeft: 64,
      marginBottom: 56,
      x: { label: data.x, domain: points.map((p) => p.group), padding: 0.6, tickRotate: points.length > 6 ? -30 : 0 },
      y: { label: data.title + " (95 % interval)", grid: true, zero: true, nice: true },
      marks: [
        Plot.ruleY([0], { stroke: MUTED }),
        Plot.ruleX(points, { x: "group", y1: "low", y2: "high", stroke: ACCENT, strokeWidth: 2 }),
        Plot.tickY(points, { x: "group", y: "low", stroke: ACCENT }),
        Plot.tickY(points, { x: "group", y: "high", stroke: ACCENT }),
        Plot.dot(points, { x: "group", y: "value", fill: ACCENT, r: 4, title: (p) => p.group + ": " + p.value }),
      ],
    });
  }

  // Budgets: ε used after each ledger entry, as a step line, against the total as a rule.
  function budget(data, canvas) {
    const points = data.points.map((p) => ({ at: new Date(p.at), used: p.used }));
    points.unshift({ at: points[0].at, used: 0 }); // from nothing used, before the first entry
    return Plot.plot({
      className: "cr-plot",
      width: width(canvas),
      height: 230,
      marginLeft: 48,
      marginRight: 24,
      marginBottom: 44,
      x: { label: "time of the ledger entry (UTC)", type: "utc", ticks: 4, labelOffset: 40 },
      y: { label: "ε used", domain: [0, Math.max(data.total, ...points.map((p) => p.used)) * 1.1], grid: true },
      marks: [
        Plot.ruleY([data.total], { stroke: BAD, strokeDasharray: "4 3" }),
        Plot.text([data.total], { y: (d) => d, frameAnchor: "right", dy: -7, text: (d) => "total ε " + d, fill: BAD }),
        Plot.lineY(points, { x: "at", y: "used", curve: "step-after", stroke: ACCENT, strokeWidth: 2 }),
        Plot.dot(points.slice(1), { x: "at", y: "used", fill: ACCENT, r: 3 }),
      ],
    });
  }

  // Extract marginals: per value, the noisy real share beside the synthetic share.
  function marginals(data, canvas) {
    const bars = data.bars.flatMap((b) => [
      { label: String(b.label), series: "real (noisy)", share: b.real },
      { label: String(b.label), series: "synthetic", share: b.synthetic },
    ]);
    return Plot.plot({
      className: "cr-plot",
      width: width(canvas),
      height: 240,
      marginLeft: 48,
      marginBottom: 48,
      fx: { label: data.column, domain: data.bars.map((b) => String(b.label)), tickRotate: data.bars.length > 8 ? -30 : 0 },
      x: { axis: null, domain: ["real (noisy)", "synthetic"] },
      y: { label: "share of rows", grid: true, percent: true },
      color: { domain: ["real (noisy)", "synthetic"], range: [MUTED, ACCENT], legend: true },
      marks: [
        Plot.barY(bars, { fx: "label", x: "series", y: "share", fill: "series", title: (b) => b.series + ": " + b.share }),
        Plot.ruleY([0]),
      ],
    });
  }

  const DRAW = { result: result, budget: budget, marginals: marginals };

  // Plot adds a <style> element for its defaults; the CSP refuses inline styles, so it is
  // dropped before the chart enters the page and app.css carries those rules.
  function withoutInlineStyle(node) {
    node.querySelectorAll("style").forEach((style) => style.remove());
    return node;
  }

  document.querySelectorAll("[data-chart]").forEach(function (canvas) {
    const source = document.getElementById(canvas.dataset.chart);
    if (!source) return;
    const data = JSON.parse(source.textContent);
    const draw = DRAW[data.kind];
    if (!draw) return;
    canvas.replaceChildren(withoutInlineStyle(draw(data, canvas)));
    canvas.classList.add("drawn");
  });
})();
