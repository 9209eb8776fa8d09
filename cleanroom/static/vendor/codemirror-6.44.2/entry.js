// The parts of CodeMirror 6 the query composer uses, bundled into one file as window.CodeMirror.
export { EditorState } from "@codemirror/state";
export {
  EditorView, keymap, lineNumbers, drawSelection, highlightActiveLine, highlightSpecialChars,
} from "@codemirror/view";
export { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
export { syntaxHighlighting, defaultHighlightStyle, bracketMatching } from "@codemirror/language";
export { sql, PostgreSQL } from "@codemirror/lang-sql";
export { autocompletion, completionKeymap } from "@codemirror/autocomplete";
export { setDiagnostics, lintGutter, lintKeymap } from "@codemirror/lint";
