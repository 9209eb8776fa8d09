// Schema confirmation: send a sample of the chosen file (the first 2 MB of a CSV, cut at a line
// end; a Parquet file whole, since its schema sits at the end) and show the suggested schema.
(function () {
  const input = document.querySelector("[data-schema-url]");
  if (!input) return;
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
})();
