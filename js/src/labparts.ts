/**
 * The sidebar's places in JupyterLab outside the panel: the status bar item,
 * the end-of-run notifications, the notebook toolbar button.
 */
import { Notification } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { LabIcon, Toolbar, ToolbarButton } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { IRun } from './api';
import { h } from './dom';
import { SoopervisorModel } from './model';

export const CommandIds = {
  run: 'soopervisor:run',
  runSample: 'soopervisor:run-sample',
  runFull: 'soopervisor:run-full',
  validate: 'soopervisor:validate',
  open: 'soopervisor:open',
  showLog: 'soopervisor:show-log'
} as const;

/** "2 runs going" in the status bar while any run goes on (any project); a click opens the panel. */
export class RunsStatus extends Widget {
  constructor(
    private _model: SoopervisorModel,
    commands: CommandRegistry
  ) {
    super();
    this.addClass('sv-status');
    this._button = h('button', {
      class: 'sv-status-button',
      'data-testid': 'sv-status',
      onclick: () => void commands.execute(CommandIds.open)
    });
    this.node.append(this._button);
    _model.changed.connect((_, what) => what === 'activity' && this._render(), this);
    this._render();
  }

  /** The status bar shows the item only while this says true. */
  get isActiveNow(): boolean {
    return this._model.active.length > 0;
  }

  get activeStateChanged(): ISignal<this, void> {
    return this._activeChanged;
  }

  private _render(): void {
    const runs = this._model.active;
    const n = runs.length;
    this._button.dataset.count = String(n);
    this._button.textContent = `▶ ${n} run${n === 1 ? '' : 's'} going`;
    this._button.title =
      runs.map(r => `${r.project}: ${r.mode} run ${r.id} (${r.status})`).join('\n') + '\nClick to open the soopervisor panel';
    this._activeChanged.emit();
  }

  private _button: HTMLButtonElement;
  private _activeChanged = new Signal<this, void>(this);
}

/** A notification when a run this page saw going ends, with a "Show log" action. */
export function notifyRunEnds(model: SoopervisorModel, commands: CommandRegistry): void {
  model.runEnded.connect((_, run: IRun) => {
    const what = `${run.mode} run of ${run.project} (${run.short_commit})`;
    const options = {
      // a failure stays until read; a success goes after a while (it stays in the notification list)
      autoClose: run.status === 'succeeded' ? 20_000 : (false as const),
      actions: [
        {
          label: 'Show log',
          caption: `Open run ${run.id} in the soopervisor panel`,
          callback: () => void commands.execute(CommandIds.showLog, { runId: run.id })
        }
      ]
    };
    if (run.status === 'succeeded') {
      Notification.success(`soopervisor: the ${what} succeeded`, options);
    } else if (run.status === 'cancelled') {
      Notification.warning(`soopervisor: the ${what} was cancelled`, options);
    } else {
      const task = run.failed_task ? `: task ${run.failed_task} failed` : run.error ? `: ${run.error}` : '';
      Notification.error(`soopervisor: the ${what} ${run.status}${task}`, options);
    }
  });
}

/** A button in every notebook's toolbar: a run (the default mode) of the project holding the notebook. */
export class NotebookRunButton implements DocumentRegistry.WidgetExtension {
  constructor(
    private _commands: CommandRegistry,
    private _icon: LabIcon,
    private _localPath: (path: string) => string
  ) {}

  createNew(widget: Widget & { toolbar?: Toolbar }, context: DocumentRegistry.Context): IDisposable {
    const button = new ToolbarButton({
      icon: this._icon,
      label: 'Run',
      className: 'sv-notebook-run',
      tooltip: 'soopervisor: run the project of this notebook in a clean container (the default mode of the settings)',
      onClick: () => {
        const path = this._localPath(context.path);
        const folder = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
        void this._commands.execute(CommandIds.run, { path: folder });
      }
    });
    button.node.dataset.testid = 'sv-notebook-run';
    widget.toolbar?.insertItem(10, 'soopervisorRun', button);
    return button;
  }
}
