/**
 * How one file of two sets differs, as the compare view shows it: the shapes of
 * the API's file-diff route (…/compare/{other}/files/{name}) and their DOM.
 *
 * Colour is never the only cue: every changed line carries a sign (− + ~) and
 * every cell its status in words, so the view reads in both themes and without
 * colour. Plain DOM, like the panel; nothing here fetches except the images.
 */
import { ApiClient, ApiError } from './api';
import { errorBox, fmtSize, h } from './dom';

export type FileStatus = 'added' | 'removed' | 'changed' | 'unchanged';
export type FileKind = 'text' | 'json' | 'notebook' | 'table' | 'image' | 'binary';

export interface ISide {
  size: number;
  sha256: string;
}

export interface IDiffRow {
  op: 'equal' | 'insert' | 'delete' | 'replace' | 'skip';
  a_line: number | null;
  b_line: number | null;
  a: string | null;
  b: string | null;
  count?: number;
}

export interface ITextDiff {
  rows: IDiffRow[];
  truncated: boolean;
}

export interface IJsonKey {
  key: string;
  a?: string;
  b?: string;
}

/** A JSON file: its text rows, and the keys that changed (null when a side does not parse; `note` says which). */
export interface IJsonDiff extends ITextDiff {
  keys: { changed: IJsonKey[]; added: IJsonKey[]; removed: IJsonKey[] } | null;
  keys_truncated: boolean;
  note?: string;
}

export interface INotebookCell {
  status: 'unchanged' | 'modified' | 'added' | 'removed';
  a_index: number | null;
  b_index: number | null;
  cell_type: string;
  source: { rows: IDiffRow[] };
  outputs: 'unchanged' | 'changed' | 'added' | 'removed';
  outputs_a: string[];
  outputs_b: string[];
}

export interface INotebookDiff {
  engine: string;
  metadata_changed: boolean;
  cells: INotebookCell[];
}

export interface IColumn {
  name: string;
  type: string;
}

export interface ITableShape {
  rows: number;
  columns: IColumn[];
}

export interface ITableDiff {
  a: ITableShape | null;
  b: ITableShape | null;
  columns_added: string[];
  columns_removed: string[];
  columns_changed: string[] | null;
  note?: string | null;
  examples: { row: number; column: string; a: unknown; b: unknown }[];
}

export interface IFileDiff {
  name: string;
  status: FileStatus;
  kind: FileKind;
  a: ISide | null;
  b: ISide | null;
  /** The ploomber task that made the file (B's manifest, else A's); null when unknown. */
  task?: string | null;
  /** Whether it is ploomber's `.<product>.metadata` file (folded in the file list). */
  metadata?: boolean;
  diff: Record<string, any>;
}

/** Where the two sides of a file are downloaded from (the files route of each set); null: no such side. */
export interface ISideLinks {
  a: string | null;
  b: string | null;
}

/** The signs of a row's two sides: what the colour says, in a character. */
const SIGNS: Record<IDiffRow['op'], [string, string]> = {
  equal: ['', ''],
  delete: ['−', ''],
  insert: ['', '+'],
  replace: ['−', '+'],
  skip: ['', '']
};

const OP_WORDS: Record<IDiffRow['op'], string> = {
  equal: 'unchanged',
  delete: 'removed',
  insert: 'added',
  replace: 'changed',
  skip: 'unchanged'
};

/** Side-by-side rows: line number, sign and text of A, then of B; runs of equal lines folded. */
export function textTable(rows: IDiffRow[], label: string): HTMLElement {
  const body = h('tbody');
  for (const row of rows) {
    if (row.op === 'skip') {
      const n = row.count ?? 0;
      body.append(
        h(
          'tr',
          { class: 'sv-diff-row sv-diff-row--skip', 'data-testid': 'sv-diff-row', 'data-op': 'skip' },
          h('td', { class: 'sv-diff-skip', colspan: '6' }, `⋯ ${n} unchanged line${n === 1 ? '' : 's'}`)
        )
      );
      continue;
    }
    const [signA, signB] = SIGNS[row.op] ?? ['', ''];
    body.append(
      h(
        'tr',
        {
          class: `sv-diff-row sv-diff-row--${row.op}`,
          'data-testid': 'sv-diff-row',
          'data-op': row.op,
          title: OP_WORDS[row.op]
        },
        h('td', { class: 'sv-diff-ln' }, row.a_line === null ? '' : String(row.a_line)),
        h('td', { class: 'sv-diff-sign sv-diff-sign--a' }, signA),
        h('td', { class: 'sv-diff-code sv-diff-a' }, row.a ?? ''),
        h('td', { class: 'sv-diff-ln' }, row.b_line === null ? '' : String(row.b_line)),
        h('td', { class: 'sv-diff-sign sv-diff-sign--b' }, signB),
        h('td', { class: 'sv-diff-code sv-diff-b' }, row.b ?? '')
      )
    );
  }
  return h(
    'table',
    { class: 'sv-diff-text', 'data-testid': 'sv-diff-text', 'aria-label': label },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', { class: 'sv-diff-ln', scope: 'col' }, h('span', { class: 'sv-cmp-sr' }, 'line A')),
        h('th', { class: 'sv-diff-sign', scope: 'col' }, h('span', { class: 'sv-cmp-sr' }, 'change')),
        h('th', { scope: 'col' }, 'A'),
        h('th', { class: 'sv-diff-ln', scope: 'col' }, h('span', { class: 'sv-cmp-sr' }, 'line B')),
        h('th', { class: 'sv-diff-sign', scope: 'col' }, h('span', { class: 'sv-cmp-sr' }, 'change')),
        h('th', { scope: 'col' }, 'B')
      )
    ),
    body
  );
}

const CELL_SIGNS: Record<INotebookCell['status'], string> = { unchanged: '=', modified: '~', added: '+', removed: '−' };

/** A notebook, cell by cell: the cell's status, its source side by side, its outputs when they changed. */
export function notebookDiff(diff: INotebookDiff): HTMLElement {
  const cells = diff.cells ?? [];
  const where = (c: INotebookCell) =>
    c.a_index === null ? `B ${c.b_index! + 1}` : c.b_index === null ? `A ${c.a_index + 1}` : c.a_index === c.b_index ? `${c.a_index + 1}` : `${c.a_index + 1} → ${c.b_index + 1}`;
  return h(
    'div',
    { class: 'sv-nb-diff', 'data-testid': 'sv-nb-diff' },
    h(
      'div',
      { class: 'sv-muted sv-diff-note' },
      `${cells.length} cell${cells.length === 1 ? '' : 's'} compared by ${diff.engine}`,
      diff.metadata_changed ? ' · the notebook’s metadata changed' : ''
    ),
    ...cells.map(c =>
      h(
        'section',
        {
          class: `sv-nb-cell sv-nb-cell--${c.status}`,
          'data-testid': 'sv-nb-cell',
          'data-status': c.status,
          'aria-label': `cell ${where(c)}, ${c.cell_type}, ${c.status}`
        },
        h(
          'div',
          { class: 'sv-nb-cell-head' },
          h('span', { class: 'sv-diff-status-sign', 'aria-hidden': 'true' }, CELL_SIGNS[c.status] ?? '?'),
          h('span', {}, `Cell ${where(c)}`),
          h('span', { class: 'sv-muted' }, c.cell_type),
          h('span', { class: `sv-nb-status sv-nb-status--${c.status}` }, c.status),
          c.outputs !== 'unchanged' ? h('span', { class: 'sv-nb-status' }, `outputs ${c.outputs}`) : null
        ),
        c.source?.rows?.length ? textTable(c.source.rows, `source of cell ${where(c)}`) : null,
        c.outputs !== 'unchanged' ? outputs(c) : null
      )
    )
  );
}

function outputs(c: INotebookCell): HTMLElement {
  const list = (items: string[], side: string) =>
    h(
      'div',
      { class: `sv-nb-outputs-side sv-nb-outputs-${side}` },
      h('div', { class: 'sv-muted' }, `outputs ${side.toUpperCase()}`),
      items.length
        ? h('ul', {}, ...items.map(o => h('li', { class: 'sv-diff-code' }, o)))
        : h('div', { class: 'sv-empty' }, 'none')
    );
  return h(
    'div',
    { class: 'sv-nb-outputs', 'data-testid': 'sv-nb-outputs' },
    list(c.outputs_a ?? [], 'a'),
    list(c.outputs_b ?? [], 'b')
  );
}

/** A table's shapes, its columns (types on both sides, what changed) and example changed values. */
/** A JSON file's changed, added and removed keys as dotted paths, each with A's and B's value. */
export function jsonKeys(diff: IJsonDiff): HTMLElement {
  if (!diff.keys) {
    return h('div', { class: 'sv-muted sv-diff-note', 'data-testid': 'sv-json-note' }, diff.note || 'not valid JSON: compared as text');
  }
  const rows: [string, string, IJsonKey][] = [
    ...diff.keys.changed.map(k => ['~', 'changed', k] as [string, string, IJsonKey]),
    ...diff.keys.added.map(k => ['+', 'added', k] as [string, string, IJsonKey]),
    ...diff.keys.removed.map(k => ['−', 'removed', k] as [string, string, IJsonKey])
  ];
  if (!rows.length) {
    return h('div', { class: 'sv-muted sv-diff-note', 'data-testid': 'sv-json-note' }, 'Same keys and values: only the formatting or the order of keys differs.');
  }
  return h(
    'div',
    { class: 'sv-json-diff' },
    h(
      'table',
      { class: 'sv-grid', 'aria-label': 'keys that changed', 'data-testid': 'sv-json-keys' },
      h('thead', {}, h('tr', {}, ...['', 'key', 'A', 'B'].map(t => h('th', { scope: 'col' }, t)))),
      h(
        'tbody',
        {},
        ...rows.map(([sign, what, k]) =>
          h(
            'tr',
            { 'data-testid': 'sv-json-key', 'data-key': k.key, 'data-state': what },
            h('td', { class: 'sv-diff-sign', title: what }, sign),
            h('td', { class: 'sv-diff-code' }, k.key || '(the whole value)'),
            h('td', { class: 'sv-diff-code' }, k.a ?? ''),
            h('td', { class: 'sv-diff-code' }, k.b ?? '')
          )
        )
      )
    ),
    diff.keys_truncated ? h('div', { class: 'sv-muted sv-diff-note' }, 'More keys changed than are listed.') : null
  );
}

export function tableDiff(diff: ITableDiff): HTMLElement {
  const shape = (s: ITableShape | null) =>
    s ? `${s.rows} row${s.rows === 1 ? '' : 's'} × ${s.columns.length} column${s.columns.length === 1 ? '' : 's'}` : 'absent';
  const types = (s: ITableShape | null) => new Map((s?.columns ?? []).map(c => [c.name, c.type]));
  const ta = types(diff.a);
  const tb = types(diff.b);
  const added = new Set(diff.columns_added ?? []);
  const removed = new Set(diff.columns_removed ?? []);
  const changed = new Set(diff.columns_changed ?? []);
  // A's columns in order, then the ones only B has
  const names = [...ta.keys(), ...[...tb.keys()].filter(n => !ta.has(n))];
  const state = (n: string) =>
    added.has(n) ? ['+', 'added'] : removed.has(n) ? ['−', 'removed'] : changed.has(n) ? ['~', 'values changed'] : ta.get(n) !== tb.get(n) ? ['~', 'type changed'] : ['', 'same'];
  const cell = (v: unknown) => h('td', { class: 'sv-diff-code' }, v === null || v === undefined ? '∅' : String(v));
  return h(
    'div',
    { class: 'sv-table-diff', 'data-testid': 'sv-table-diff' },
    h('div', { class: 'sv-diff-note', 'data-testid': 'sv-table-shapes' }, `A: ${shape(diff.a)} · B: ${shape(diff.b)}`),
    diff.columns_changed === null
      ? h('div', { class: 'sv-muted sv-diff-note' }, diff.note || 'values not compared: the row counts differ')
      : null,
    h(
      'table',
      { class: 'sv-grid', 'aria-label': 'columns' },
      h(
        'thead',
        {},
        h('tr', {}, ...['', 'column', 'type A', 'type B', 'change'].map(t => h('th', { scope: 'col' }, t)))
      ),
      h(
        'tbody',
        {},
        ...names.map(n => {
          const [sign, what] = state(n);
          return h(
            'tr',
            { class: `sv-col-row sv-col-row--${what.replace(/ /g, '-')}`, 'data-testid': 'sv-table-column', 'data-name': n, 'data-state': what },
            h('td', { class: 'sv-diff-sign' }, sign),
            h('td', { class: 'sv-diff-code' }, n),
            h('td', {}, ta.get(n) ?? ''),
            h('td', {}, tb.get(n) ?? ''),
            h('td', {}, what)
          );
        })
      )
    ),
    diff.examples?.length
      ? h(
          'table',
          { class: 'sv-grid', 'data-testid': 'sv-table-examples', 'aria-label': 'example changed values' },
          h('caption', {}, 'Example changed values'),
          h('thead', {}, h('tr', {}, ...['row', 'column', 'A', 'B'].map(t => h('th', { scope: 'col' }, t)))),
          h(
            'tbody',
            {},
            // rows counted from 1, as the table view pages them (the API counts from 0)
            ...diff.examples.map(e => h('tr', {}, h('td', {}, String(e.row + 1)), h('td', { class: 'sv-diff-code' }, e.column), cell(e.a), cell(e.b)))
          )
        )
      : null
  );
}

/** Size and sha256 of each side: all a binary file's diff can say. */
export function sidesTable(file: IFileDiff): HTMLElement {
  const row = (label: string, s: ISide | null) =>
    h(
      'tr',
      {},
      h('th', { scope: 'row' }, label),
      h('td', {}, s ? fmtSize(s.size) : 'absent'),
      h('td', { class: 'sv-diff-code sv-sha-full' }, s?.sha256 ?? '')
    );
  const same = file.a && file.b && file.a.sha256 === file.b.sha256;
  return h(
    'div',
    { class: 'sv-sides', 'data-testid': 'sv-sides' },
    h(
      'table',
      { class: 'sv-grid', 'aria-label': 'sizes and checksums' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'side'), h('th', { scope: 'col' }, 'size'), h('th', { scope: 'col' }, 'sha256'))),
      h('tbody', {}, row('A', file.a), row('B', file.b))
    ),
    file.a && file.b ? h('div', { class: 'sv-diff-note' }, same ? 'The same bytes on both sides.' : 'The bytes differ.') : null
  );
}

/**
 * Both sides of an image next to each other. The files route needs the transport's
 * credentials (a token header where there is no cookie), so each side is fetched
 * and shown from a blob URL; `track` gets each URL for the caller to revoke.
 */
export function imagePair(client: ApiClient, file: IFileDiff, endpoints: ISideLinks, track: (url: string) => void): HTMLElement {
  const side = (label: 'A' | 'B', endpoint: string | null, meta: ISide | null) => {
    const box = h(
      'figure',
      { class: 'sv-image-side', 'data-testid': `sv-image-${label.toLowerCase()}` },
      h('figcaption', { class: 'sv-muted' }, `${label}${meta ? ` · ${fmtSize(meta.size)}` : ''}`)
    );
    if (!endpoint || !meta) {
      box.append(h('div', { class: 'sv-empty' }, `not in ${label}`));
      return box;
    }
    const slot = h('div', { class: 'sv-muted' }, 'Loading…');
    box.append(slot);
    void client.fetchOk(endpoint).then(r => r.blob())
      .then(blob => {
        const url = URL.createObjectURL(blob);
        track(url);
        slot.replaceWith(h('img', { src: url, alt: `${file.name}, side ${label}` }));
      })
      .catch((e: ApiError) => slot.replaceWith(errorBox(`Cannot load ${label}: ${e.message}`, e.hint)));
    return box;
  };
  return h('div', { class: 'sv-image-pair', 'data-testid': 'sv-image-pair' }, side('A', endpoints.a, file.a), side('B', endpoints.b, file.b));
}

