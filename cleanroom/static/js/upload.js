// Schema confirmation: send a sample of the chosen file (the first 2 MB of a CSV, cut at a line
// end; a Parquet file whole, since its schema sits at the end) and show the suggested schema.
// Before the form is sent, check the confirmed schema as the server will (parties/ingest.py,
// parse_specs): exactly one privacy unit, numeric bounds for each measure (lower below upper),
// a domain for each dimension. The server checks again; this only saves a round trip.
(function () {
  const input = document.querySelector("[data-schema-url]");
  if (!input) return;
  const form = input.closest("form");
  const target = document.getElementById("schema");
  const SAMPLE = 2 * 1024 * 1024;

  async function sampleOf(file) {
    if (file.name.toLowerCase().endsWith(".parquet") || file.size <= SAMPLE) return file;
    const head = new Uint8Array(await file.slice(0, SAMPLE).arrayBuffer());
    const end = head.lastIndexOf(10);
    return new File([head.slice(0, end + 1)], file.name, { type: file.type });
  }

  input.addEventListener("change", async function () {
    const file = input.files[0];
    if (!file) return;
    target.innerHTML = '<p class="muted">Reading a sample of ' + file.name + "…</p>";
    const body = new FormData();
    body.append("file", await sampleOf(file));
    body.append("csrfmiddlewaretoken", document.querySelector("[name=csrfmiddlewaretoken]").value);
    const response = await fetch(input.dataset.schemaUrl, { method: "POST", body: body });
    target.innerHTML = await response.text();
    htmx.process(target);
  });

  function field(row, name) {
    return row.querySelector("[name$='-" + name + "']");
  }

  function isNumber(text) {
    return /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text.trim());
  }

  // Each problem as [message, the input to mark], in the order of the table.
  function problems() {
    const rows = Array.from(target.querySelectorAll("#schema-table tbody tr"));
    if (!rows.length) return [];
    const found = [];
    const units = rows.filter((row) => field(row, "role").value === "unit");
    if (units.length !== 1) {
      found.push([
        "Mark exactly one column as the privacy unit (the id of the person a row is about); " +
          units.length + " marked.",
        field(units[1] || rows[0], "role"),
      ]);
    }
    rows.forEach(function (row) {
      const name = field(row, "name").value;
      const role = field(row, "role").value;
      const type = field(row, "type").value;
      if (role === "dimension" && !field(row, "domain").value.trim()) {
        found.push([name + " is a dimension: list its public values, one a line.", field(row, "domain")]);
      }
      if (role === "measure") {
        const lower = field(row, "lower");
        const upper = field(row, "upper");
        if (type !== "integer" && type !== "float") {
          found.push([name + " is a measure, so its type must be a number.", field(row, "type")]);
        } else if (!isNumber(lower.value) || !isNumber(upper.value)) {
          found.push([name + " is a measure: give numeric lower and upper bounds.", isNumber(lower.value) ? upper : lower]);
        } else if (!(Number(lower.value) < Number(upper.value))) {
          found.push([name + ": the lower bound must be below the upper.", lower]);
        }
      }
    });
    return found;
  }

  function show(found) {
    let box = document.getElementById("schema-problems");
    target.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
    if (!found.length) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = document.createElement("div");
      box.id = "schema-problems";
      box.className = "errors";
      box.setAttribute("role", "alert");
      target.after(box);
    }
    box.replaceChildren();
    const intro = document.createElement("p");
    intro.textContent = "Nothing was sent. Fix the schema first:";
    const list = document.createElement("ul");
    found.forEach(function ([message, element]) {
      const item = document.createElement("li");
      item.textContent = message;
      list.append(item);
      if (element) element.setAttribute("aria-invalid", "true");
    });
    box.append(intro, list);
  }

  form.addEventListener("submit", function (event) {
    const found = problems();
    show(found);
    if (found.length) {
      event.preventDefault();
      found[0][1] && found[0][1].focus();
    }
  });
  // Once shown, the list follows each correction.
  target.addEventListener("change", function () {
    if (document.getElementById("schema-problems")) show(problems());
  });
})();
