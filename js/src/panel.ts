/**
 * The sidebar view. Each section re-renders only when the model says its part
 * changed; the log appends lines instead of redrawing.
 */
import { Widget } from '@lumino/widgets';

import { IRun, isRunning, runPlace } from './api';
import { CommitList, moveFocus } from './commits';
import { badge, docsLink, errorBox, fmtWhen, h } from './dom';
import { LogView } from './logview';
import { SoopervisorModel } from './model';
import { failureBanner, runDuration, runHeaderLine, shownKey } from './rundetail';

export class SoopervisorPanel extends Widget {
  constructor(readonly model: SoopervisorModel) {
    super();
    this.id = 'soopervisor-panel';
    this.addClass('sv-panel');
    this.node.dataset.testid = 'sv-panel';
    this._commitList = new CommitList(model);
    this._actions.append(this._runOn, this._buttons);
    this.node.append(
      h(
        'header',
        { class: 'sv-header' },
        h('h2', {}, 'soopervisor'),
        h(
          'button',
          {
            class: 'sv-icon-button',
            title: 'Refresh',
            'aria-label': 'Refresh',
            onclick: () => void model.refreshAll()
          },
          '↻'
        )
      ),
      this._banner,
      this._section('Project', this._project),
      this._actions,
      this._section('Runs', this._runs),
      this._detail,
      this._section('Artifacts by commit', this._commits, this._commitCount)
    );
    model.changed.connect((_, what) => this._render(what), this);
    for (const what of ['version', 'validation', 'action', 'remotes', 'runs', 'selection', 'commits']) {
      this._render(what);
    }
    // durations of running runs tick without a server round trip; "started 2m ago" stays true
    this._ticker = window.setInterval(() => this._tick(), 1000);
    this.node.setAttribute('aria-label', 'soopervisor runs');
  }

  /** Opens a run in the main area (the run view); set by the plugin. The ⤢ button shows only when set. */
  get openRun(): ((runId: string) => void) | null {
    return this._openRun;
  }

  set openRun(open: ((runId: string) => void) | null) {
    this._openRun = open;
    this._renderDetailHeader();
  }

  /** Polling starts when the panel is first shown: a closed sidebar costs nothing. */
  protected onAfterShow(): void {
    void this.model.start();
  }

  protected onAfterAttach(): void {
    if (this.isVisible) {
      void this.model.start();
    }
  }

  dispose(): void {
    window.clearInterval(this._ticker);
    this._commitList.dispose();
    this.model.dispose();
    super.dispose();
  }

  private _section(title: string, body: HTMLElement, extra?: HTMLElement): HTMLElement {
    return h('section', { class: 'sv-section' }, h('h3', {}, title, extra), body);
  }

  private _render(what: string): void {
    switch (what) {
      case 'version':
        return this._renderVersion();
      case 'validation':
        this._renderValidation();
        return this._renderActions();
      case 'action':
        this._renderActions();
        this._renderRunOn(); // no change of place while a run starts
        return this._renderDetailHeader(true); // a failed stop re-enables its button
      case 'runs':
        this._renderRuns();
        return this._renderDetailHeader();
      case 'selection':
        this._renderRuns();
        return this._renderDetail();
      case 'commits':
        return this._renderCommits();
      case 'remotes':
        this._renderActions(); // the buttons say where they run
        return this._renderRunOn();
      case 'settings':
        // the default mode moves the accent; hidden patterns change the open file lists
        this._renderActions();
        return this._commitList.refresh();
    }
  }

  private _renderVersion(): void {
    const { version: v, frontendVersion: mine } = this.model;
    const pip = `pip install soopervisor==${mine}`;
    let text: HTMLElement | null = null;
    if (v.state === 'mismatch') {
      text = errorBox(
        `Version mismatch: this sidebar is soopervisor ${mine}, the Jupyter server runs soopervisor ${v.server}.`,
        `Run \`${pip}\` in the Python environment of the Jupyter server, restart the server, then reload this page.`,
        'sv-version-banner'
      );
    } else if (v.state === 'missing') {
      text = errorBox(
        `The soopervisor server extension is not running (sidebar ${mine}).`,
        `Run \`${pip}\` in the Python environment of the Jupyter server, check that ` +
          '`jupyter server extension list` shows soopervisor_jupyter enabled, restart the server, then reload this page.',
        'sv-version-banner'
      );
    } else if (v.state === 'error') {
      text = errorBox(`Cannot check the server's version: ${v.error?.message}`, v.error?.hint, 'sv-version-banner');
    }
    this._banner.replaceChildren(...(text ? [text] : []));
    this._banner.hidden = !text;
  }

  private _renderValidation(): void {
    const v = this.model.validation;
    const where = h(
      'div',
      { class: 'sv-path', title: 'The file browser’s folder (relative to the Jupyter root)' },
      '/' + this.model.path
    );
    this._project.dataset.state = v.state === 'ready' ? (v.value.ok ? 'ok' : 'invalid') : v.state;
    this._project.dataset.path = this.model.path;
    if (v.state === 'loading') {
      this._project.replaceChildren(where, h('div', { class: 'sv-muted' }, 'Validating…'));
      return;
    }
    if (v.state === 'error') {
      this._project.replaceChildren(where, errorBox(`Cannot validate: ${v.error.message}`, v.error.hint, 'sv-error', v.error.docs));
      return;
    }
    const r = v.value;
    const p = r.project;
    const head = r.ok
      ? h(
          'div',
          { class: 'sv-valid', 'data-testid': 'sv-validation-ok' },
          `✓ ${p?.name ?? 'project'} is valid`,
          p?.commit ? h('span', { class: 'sv-muted' }, ` at ${p.commit.slice(0, 7)}${p.dirty ? ' (uncommitted changes)' : ''}`) : null
        )
      : h(
          'div',
          { class: 'sv-invalid', 'data-testid': 'sv-validation-invalid' },
          `✗ ${r.problems.filter(x => x.severity === 'error').length} problem(s)` + (p ? ` in ${p.name}` : '')
        );
    const problems = r.problems.map(x =>
      h(
        'li',
        { class: `sv-problem sv-problem--${x.severity}`, 'data-testid': 'sv-problem', 'data-code': x.code },
        h('div', {}, h('strong', {}, x.severity === 'error' ? 'Error: ' : 'Warning: '), x.what),
        x.where ? h('div', { class: 'sv-muted sv-where' }, x.where) : null,
        x.hint ? h('div', { class: 'sv-hint' }, x.hint) : null,
        docsLink(x.docs)
      )
    );
    this._project.replaceChildren(where, head, problems.length ? h('ul', { class: 'sv-problems' }, ...problems) : '');
  }

  private _renderActions(): void {
    const m = this.model;
    const reason = m.blockedReason;
    const primary = m.settings.defaultMode;
    this._actions.dataset.defaultMode = primary;
    const button = (mode: 'sample' | 'full', label: string, title: string) =>
      h(
        'button',
        {
          // the default mode of the settings is the accented button
          class: `jp-Button sv-run-button ${mode === primary ? 'jp-mod-accept sv-run-button--default' : ''} jp-mod-styled`,
          'data-testid': `sv-run-${mode}`,
          'data-default': String(mode === primary),
          disabled: !!reason,
          title: reason ? `Cannot run: ${reason}` : title,
          onclick: () => void m.startRun(mode)
        },
        m.starting === mode ? 'Starting…' : label
      );
    const where = m.runOn ? ` on ${m.runOn} (its pushed commit)` : '';
    this._buttons.replaceChildren(
      h(
        'div',
        { class: 'sv-buttons' },
        button('sample', '▶ Sample run', `Run the pipeline with sample: true, in a clean container${where}`),
        button('full', '▶ Full run', `Run the whole pipeline in a clean container${where}`)
      ),
      reason && !m.starting ? h('div', { class: 'sv-muted', 'data-testid': 'sv-run-blocked' }, `Disabled: ${reason}`) : '',
      m.actionError ? errorBox(m.actionError.message, m.actionError.hint, 'sv-action-error', m.actionError.docs) : ''
    );
  }

  /**
   * "Run on": this machine, or one of the remotes (GET /remotes); shown when there are any. The
   * element stays (only its options change), so a keyboard user keeps the focus on it.
   */
  private _renderRunOn(): void {
    const m = this.model;
    const select = this._runOnSelect;
    const options = [
      h('option', { value: '' }, 'This machine'),
      ...m.remotes.map(r =>
        h('option', { value: r.name, title: r.url }, `${r.name} (${r.kind === 'github' ? 'GitHub Actions' : 'team server'})`)
      )
    ];
    const key = JSON.stringify(m.remotes);
    if (key !== this._remotesKey) {
      this._remotesKey = key;
      select.replaceChildren(...options);
    }
    select.value = m.runOn ?? '';
    select.disabled = !!m.starting;
    this._runOn.hidden = !m.remotes.length && !m.remotesError;
    select.hidden = !m.remotes.length;
    this._runOnLabel.hidden = !m.remotes.length;
    this._runOnError.replaceChildren(
      m.remotesError ? errorBox(`Cannot list the remotes: ${m.remotesError.message}`, m.remotesError.hint, 'sv-remotes-error') : ''
    );
  }

  private _renderRuns(): void {
    const r = this.model.runs;
    this._runs.dataset.state = r.state;
    if (r.state === 'loading') {
      this._runs.replaceChildren(h('div', { class: 'sv-muted' }, this.model.project ? 'Loading runs…' : ''));
      return;
    }
    if (r.state === 'error') {
      this._runs.replaceChildren(errorBox(`Cannot list runs: ${r.error.message}`, r.error.hint, 'sv-error', r.error.docs));
      return;
    }
    if (!r.value.length) {
      this._runs.replaceChildren(
        h(
          'div',
          { class: 'sv-empty', 'data-testid': 'sv-runs-empty' },
          this.model.project ? 'No runs yet. Start a sample run above.' : 'Open a project folder in the file browser.'
        )
      );
      return;
    }
    // rows are few (≤100) and change rarely (identical polls are dropped): rebuilding is cheap,
    // but the keyboard's place is kept: the focused row gets the focus back
    const focused = (document.activeElement as HTMLElement | null)?.closest?.('.sv-run') as HTMLElement | null;
    const focusId = focused && this._runs.contains(focused) ? focused.dataset.runId : null;
    // one tab stop for the list (the selected run, else the first); arrows move inside it
    const stop = r.value.some(x => x.id === this.model.selectedRunId) ? this.model.selectedRunId : r.value[0].id;
    const rows = r.value.map(run =>
      h(
        'li',
        {
          class: 'sv-run' + (run.id === this.model.selectedRunId ? ' sv-run--selected' : ''),
          'data-testid': 'sv-run-row',
          'data-run-id': run.id,
          'data-status': run.status,
          'data-where': runPlace(run),
          role: 'option',
          tabindex: run.id === stop ? '0' : '-1',
          'aria-selected': String(run.id === this.model.selectedRunId),
          'aria-label': `${run.status} ${run.mode} run at ${run.short_commit} on ${runPlace(run)}` +
            (run.started_at ? `, started ${fmtWhen(run.started_at)}` : ''),
          title: `run ${run.id}, commit ${run.commit}${run.dirty ? ' (dirty)' : ''}`,
          onclick: () => this.model.selectRun(run.id),
          onkeydown: (e: KeyboardEvent) => {
            if (e.key === 'Enter' || e.key === ' ') {
              e.preventDefault();
              this.model.selectRun(run.id);
            } else {
              moveFocus(e, this._runs, '.sv-run');
            }
          },
          onfocus: (e: FocusEvent) => {
            // roving tab stop: Tab comes back to the row last focused
            for (const row of this._runs.querySelectorAll<HTMLElement>('.sv-run')) {
              row.tabIndex = row === e.currentTarget ? 0 : -1;
            }
          }
        },
        // two lines: the sidebar is narrow
        h(
          'div',
          { class: 'sv-run-line' },
          badge(run.status),
          h('span', { class: 'sv-run-mode' }, run.mode),
          h('code', { class: 'sv-sha' }, run.short_commit),
          h('span', { class: 'sv-grow' }),
          h('span', { class: 'sv-muted sv-nowrap sv-duration', 'data-run-id': run.id }, this._duration(run))
        ),
        h(
          'div',
          { class: 'sv-run-sub sv-muted', title: run.started_at ?? '' },
          run.started_at
            ? h('span', { 'data-when': run.started_at, 'data-prefix': 'started ' }, `started ${fmtWhen(run.started_at)}`)
            : 'not started yet',
          ' · ',
          // where it ran: the remote's name, else the engine's; the executor says it in full
          h('span', { class: 'sv-run-where', 'data-testid': 'sv-run-where', title: run.executor ?? '' }, `on ${runPlace(run)}`),
          run.dirty ? ' · uncommitted changes not included' : ''
        )
      )
    );
    this._runs.replaceChildren(
      h('ul', { class: 'sv-runs', role: 'listbox', 'aria-label': 'Runs', 'data-testid': 'sv-runs' }, ...rows)
    );
    if (focusId) {
      this._runs.querySelector<HTMLElement>(`.sv-run[data-run-id="${CSS.escape(focusId)}"]`)?.focus();
    }
  }

  private _duration(run: IRun): string {
    return runDuration(run);
  }

  private _tick(): void {
    // relative times ("started 2m ago", a commit's "5m ago"): a minute is their finest unit
    if (++this._ticks % 15 === 0) {
      this.node.querySelectorAll<HTMLElement>('[data-when]').forEach(el => {
        const text = (el.dataset.prefix ?? '') + fmtWhen(el.dataset.when ?? null);
        if (el.textContent !== text) {
          el.textContent = text;
        }
      });
    }
    if (this.model.runs.state !== 'ready') {
      return;
    }
    for (const run of this.model.runs.value.filter(isRunning)) {
      this.node.querySelectorAll(`.sv-duration[data-run-id="${run.id}"]`).forEach(el => {
        el.textContent = this._duration(run);
      });
    }
  }

  /** A new selection: a fresh log view bound to the model's new stream. */
  private _renderDetail(): void {
    const log = this.model.log;
    if (!log) {
      this._logView = null;
      this._detail.replaceChildren();
      this._detail.hidden = true;
      return;
    }
    this._detail.hidden = false;
    this._logView = new LogView(log, () => this.model.selectedRun);
    this._detailHeader = h('div', { class: 'sv-detail-header' });
    this._detail.replaceChildren(h('h3', {}, 'Log'), this._detailHeader, this._logView.log, this._logView.state);
    this._renderDetailHeader(true);
  }

  /** Redrawn when what it shows changed (see shownKey), or with `force`. */
  private _renderDetailHeader(force = false): void {
    const run = this.model.selectedRun;
    if (!this._detailHeader || !run) {
      return;
    }
    const key = shownKey(run);
    if (key === this._headerKey && !force) {
      this._logView?.runChanged();
      return;
    }
    this._headerKey = key;
    this._detail.dataset.status = run.status;
    const open = this.openRun;
    const expand = open
      ? h(
          'button',
          {
            type: 'button',
            class: 'sv-icon-button',
            'data-testid': 'sv-run-open-view',
            title: `Open run ${run.id} in the main area: its log with search, stages, tasks and files`,
            'aria-label': `Open run ${run.id} in the main area`,
            onclick: () => open(run.id)
          },
          '⤢'
        )
      : null;
    this._detailHeader.replaceChildren(
      runHeaderLine(run, {
        stop: {
          testid: 'sv-run-stop',
          className: 'jp-Button jp-mod-styled jp-mod-warn sv-stop',
          act: () => this.model.stopRun(run.id)
        },
        extra: [expand]
      }),
      failureBanner(run) ?? ''
    );
    this._logView?.runChanged();
  }

  private _renderCommits(): void {
    const c = this.model.commits;
    const project = this.model.project;
    this._commits.dataset.state = c.state;
    this._commitCount.textContent = c.state === 'ready' && c.value.length ? ` · ${c.value.length}` : '';
    if (c.state === 'loading') {
      this._commits.replaceChildren(h('div', { class: 'sv-muted' }, project ? 'Loading commits…' : ''));
      return;
    }
    if (c.state === 'error') {
      this._commits.replaceChildren(errorBox(`Cannot list commits: ${c.error.message}`, c.error.hint, 'sv-error', c.error.docs));
      return;
    }
    if (!c.value.length) {
      this._commits.replaceChildren(
        h(
          'div',
          { class: 'sv-empty', 'data-testid': 'sv-commits-empty' },
          project ? 'No artifacts stored yet: a finished run stores them under its commit.' : ''
        )
      );
      return;
    }
    this._commitList.update(c.value, project ?? '');
    if (this._commitList.node.parentElement !== this._commits) {
      this._commits.replaceChildren(this._commitList.node);
    }
  }

  private _banner = h('div', { class: 'sv-banner', hidden: true });
  private _project = h('div', { class: 'sv-project', 'data-testid': 'sv-validation' });
  private _actions = h('div', { class: 'sv-actions', 'data-testid': 'sv-actions' });
  private _buttons = h('div');
  private _runOnSelect = h('select', {
    id: 'sv-run-on-select',
    class: 'jp-mod-styled sv-run-on-select',
    'data-testid': 'sv-run-on',
    title: 'Where the runs started here go: this machine, or a remote that runs the pushed commit',
    onchange: (e: Event) => this.model.setRunOn((e.currentTarget as HTMLSelectElement).value || null)
  });
  private _runOnLabel = h('label', { for: 'sv-run-on-select' }, 'Run on');
  private _runOnError = h('div');
  private _runOn = h('div', { class: 'sv-run-on', 'data-testid': 'sv-run-on-box', hidden: true },
    h('div', { class: 'sv-run-on-line' }, this._runOnLabel, this._runOnSelect),
    this._runOnError
  );
  private _remotesKey = '';
  private _runs = h('div', { class: 'sv-runs-box' });
  private _detail = h('section', { class: 'sv-section sv-detail', 'data-testid': 'sv-run-detail', hidden: true });
  private _commits = h('div', { class: 'sv-commits-box', 'data-testid': 'sv-commits' });
  private _commitCount = h('span', { class: 'sv-count' });
  private _commitList: CommitList;
  private _detailHeader: HTMLElement | null = null;
  private _headerKey = '';
  private _logView: LogView | null = null;
  private _openRun: ((runId: string) => void) | null = null;
  private _ticker = 0;
  private _ticks = 0;
}
