// The query composer's SQL editor: CodeMirror 6 over the form's textarea, which stays the field
// the form sends (without JavaScript the textarea is the editor). It highlights SQL, completes
// the room's `org.dataset` names and each column its policy allows (with the uses allowed), and
// marks the parser's refusal, which the plan panel carries, at its line and column.
(function () {
  // CodeMirror mounts its styles as <style> elements; the strict CSP admits them only with this
  // response's nonce, which the server put on this script element.
  const styleNonce = document.currentScript && document.currentScript.nonce;

  function start() {
    const textarea = document.getElementById("id_sql");
    const schemaElement = document.getElementById("completion-schema");
    if (!textarea || !schemaElement || !window.CodeMirror) return;
    const CM = window.CodeMirror;
    const datasets = JSON.parse(schemaElement.textContent);
    const form = textarea.form;

    const usesLabel = (uses) => uses.map((use) => use.replace("_", " ")).join(", ");
    const columnOption = (dataset, column) => ({
      label: column.name,
      type: "property",
      detail: usesLabel(column.uses),
      info: `${column.type} column of ${dataset.name}`,
    });

    // lang-sql's own completion resolves `org.` to the datasets, and `org.dataset.` or an alias
    // declared in FROM (`AS p`, then `p.`) to the allowed columns.
    const schema = {};
    for (const dataset of datasets) {
      const [org, name] = dataset.name.split(".");
      schema[org] = schema[org] || {
        self: { label: org, type: "namespace", detail: dataset.owner },
        children: {},
      };
      schema[org].children[name] = {
        self: { label: name, type: "class", detail: "dataset" },
        children: dataset.columns.map((column) => columnOption(dataset, column)),
      };
    }

    // Outside a dotted name: whole `org.dataset` names, and the allowed columns of the datasets
    // the query names (of every dataset in the room while it names none).
    function roomCompletions(context) {
      const word = context.matchBefore(/[\w.]*/);
      if (!word || word.text.includes(".") || (word.from === word.to && !context.explicit)) {
        return null;
      }
      const text = context.state.doc.toString();
      const named = datasets.filter((dataset) =>
        new RegExp(`\\b${dataset.name.replace(".", "\\.")}\\b`).test(text)
      );
      const options = datasets.map((dataset) => ({
        label: dataset.name,
        type: "class",
        detail: `dataset of ${dataset.owner}`,
        boost: 1,
      }));
      for (const dataset of named.length ? named : datasets) {
        for (const column of dataset.columns) options.push(columnOption(dataset, column));
      }
      return { from: word.from, options, validFor: /^\w*$/ };
    }

    const language = CM.sql({ dialect: CM.PostgreSQL, schema, upperCaseKeywords: true });
    const label = document.querySelector(`label[for="${textarea.id}"]`);
    label.id = `${textarea.id}_label`;
    label.removeAttribute("for"); // the label now names the editor, not the hidden textarea
    const described = document.getElementById(`${textarea.id}_help`);

    const view = new CM.EditorView({
      doc: textarea.value,
      extensions: [
        CM.lineNumbers(),
        CM.highlightSpecialChars(),
        CM.history(),
        CM.drawSelection(),
        CM.highlightActiveLine(),
        CM.bracketMatching(),
        CM.syntaxHighlighting(CM.defaultHighlightStyle, { fallback: true }),
        language,
        language.language.data.of({ autocomplete: roomCompletions }),
        CM.autocompletion(),
        CM.lintGutter(),
        // Tab is left to the browser, so keyboard users move on to the next field with it.
        CM.keymap.of([
          ...CM.completionKeymap,
          ...CM.lintKeymap,
          ...CM.historyKeymap,
          ...CM.defaultKeymap,
        ]),
        CM.EditorView.lineWrapping,
        // Typing is applied here, never by the browser: its own edit of this contenteditable
        // may carry the colour of the highlighted text it replaces over as a style attribute,
        // which the CSP refuses (and CodeMirror redraws anyway). The place is the page's
        // selection, where the browser was about to type, not CodeMirror's, which lags behind
        // when a selection change and the input arrive together.
        CM.EditorView.domEventHandlers({
          beforeinput(event, view) {
            if (event.inputType !== "insertText" || !event.data) return false;
            if (event.isComposing || view.composing) return false;
            const selection = document.getSelection();
            if (!selection || selection.rangeCount !== 1) return false;
            const range = selection.getRangeAt(0);
            const content = view.contentDOM;
            if (!content.contains(range.startContainer) || !content.contains(range.endContainer)) {
              return false;
            }
            const from = view.posAtDOM(range.startContainer, range.startOffset);
            const to = view.posAtDOM(range.endContainer, range.endOffset);
            view.dispatch({
              changes: { from, to, insert: event.data },
              selection: { anchor: from + event.data.length },
              scrollIntoView: true,
              userEvent: "input.type",
            });
            event.preventDefault();
            return true;
          },
        }),
        CM.EditorView.cspNonce.of(styleNonce || ""),
        CM.EditorView.contentAttributes.of({
          "aria-labelledby": label.id,
          ...(described ? { "aria-describedby": described.id } : {}),
        }),
        CM.EditorView.updateListener.of((update) => {
          if (!update.docChanged) return;
          textarea.value = update.state.doc.toString();
          // The form's htmx trigger plans what the textarea now holds.
          textarea.dispatchEvent(new Event("input", { bubbles: true }));
        }),
      ],
    });
    textarea.parentNode.insertBefore(view.dom, textarea.nextSibling);
    textarea.hidden = true;
    label.addEventListener("click", () => view.focus());

    // The refusal in the plan panel, as a diagnostic at its line and column up to the end of
    // the word there; a plan of other text than the editor now holds is not marked.
    function markRefusal(planned) {
      const error = document.getElementById("plan-error");
      const doc = view.state.doc;
      const diagnostics = [];
      if (error && planned === doc.toString()) {
        const lineNumber = Math.min(Math.max(Number(error.dataset.line) || 1, 1), doc.lines);
        const line = doc.line(lineNumber);
        const from = Math.min(line.from + Math.max(Number(error.dataset.column) || 1, 1) - 1, line.to);
        const word = /^[\w.'"]+/.exec(line.text.slice(from - line.from));
        const to = Math.min(from + (word ? word[0].length : 1), doc.length);
        diagnostics.push({
          from,
          to,
          severity: "error",
          source: "query language",
          message: error.textContent.replace(/^\s*Line \d+, column \d+: /, "").trim(),
        });
      }
      view.dispatch(CM.setDiagnostics(view.state, diagnostics));
    }

    document.body.addEventListener("htmx:afterSettle", (event) => {
      const config = event.detail.requestConfig;
      if (!config || config.elt !== form) return;
      const sent = config.formData ? config.formData.get("sql") : config.parameters.sql;
      markRefusal(sent);
    });
    markRefusal(textarea.value); // a page re-rendered with its plan (a draft, a refused POST)
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
