/**
 * soopervisor's JupyterLab sidebar: validate the file browser's folder, start
 * sample/full runs, follow their logs, download artifacts by commit. Around the
 * panel: commands in the palette, "Run" on pipeline.yaml in the file browser,
 * a notebook toolbar button, a status bar item, notifications when runs end,
 * and settings in the Settings Editor (js/schema/plugin.json).
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import iconSvg from '../style/icon.svg';
import { ApiClient } from './api';
import { OPEN_COMMIT, registerCommitView } from './commitview';
import { registerCompareView } from './compareview';
import { jupyterTransport } from './jupyter';
import { CommandIds, NotebookRunButton, RunsStatus, notifyRunEnds } from './labparts';
import { SoopervisorModel } from './model';
import { ArtifactOpener } from './opener';
import { SoopervisorPanel } from './panel';
import { OPEN_RUN, registerRunView } from './runview';
import { RunMode, readSettings } from './settings';

export const soopervisorIcon = new LabIcon({ name: 'soopervisor:icon', svgstr: iconSvg });

const PLUGIN_ID = 'soopervisor:plugin';
const CATEGORY = 'soopervisor';
/** The file whose context menu offers runs: the entry point a run uses. */
const ENTRY_POINT = 'pipeline.yaml';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The soopervisor sidebar: validate, run, follow logs, download artifacts.',
  autoStart: true,
  optional: [IDefaultFileBrowser, ILayoutRestorer, ICommandPalette, ISettingRegistry, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    browser: IDefaultFileBrowser | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    statusBar: IStatusBar | null
  ) => {
    const client = new ApiClient(jupyterTransport());
    const model = new SoopervisorModel(client);
    // the drive reads a set from the storage of the settings, as the panel's lists do
    const opener = new ArtifactOpener(app, client, runId => model.setQuery(runId));
    model.canOpen = name => opener.canOpen(name);
    model.openFile = (project, commit, runId, name) => opener.open(project, commit, runId, name);
    const panel = new SoopervisorPanel(model);
    panel.title.icon = soopervisorIcon;
    panel.title.caption = 'soopervisor';
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'soopervisor-panel');

    // the contents API path without a drive prefix, relative to the server root
    const local = (p: string) => app.serviceManager.contents.localPath(p);
    if (browser) {
      model.path = local(browser.model.path);
      browser.model.pathChanged.connect((_, change) => model.setPath(local(change.newValue ?? '')));
    }

    const openPanel = () => {
      app.shell.activateById(panel.id);
      void model.start();
    };

    /** The folder of the pipeline.yaml selected in the file browser, or null. */
    const selectedEntryPoint = (): string | null => {
      const items = browser ? Array.from(browser.selectedItems()) : [];
      if (items.length !== 1 || items[0].type === 'directory' || items[0].name !== ENTRY_POINT) {
        return null;
      }
      const path = local(items[0].path);
      return path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
    };

    /** Start a run of `path` (default: the panel's folder); the panel then shows that folder and the run. */
    const run = async (mode: RunMode, path: string = model.path): Promise<void> => {
      openPanel();
      const blocked = path === model.path && model.validation.state !== 'loading' ? model.blockedReason : null;
      if (blocked) {
        Notification.warning(`soopervisor: cannot run: ${blocked}`, { autoClose: 8_000 });
        return;
      }
      const started = await model.startRun(mode, path);
      if (!started) {
        const err = model.actionError;
        Notification.error(`soopervisor: cannot start the ${mode} run: ${err?.message ?? 'unknown error'}`, {
          autoClose: false
        });
        return;
      }
      if (browser && path !== model.path) {
        // show the project the run belongs to: the panel follows the file browser
        model.showRun(started.id);
        await browser.model.cd('/' + path);
      }
    };

    /** The target of a run command: the pipeline.yaml right-clicked, a path given, or the panel's folder. */
    const target = (args: Record<string, unknown>): string | undefined =>
      args.fromBrowser ? selectedEntryPoint() ?? undefined : typeof args.path === 'string' ? args.path : undefined;
    const isVisible = (args: Record<string, unknown>) => !args.fromBrowser || selectedEntryPoint() !== null;

    const { commands } = app;
    commands.addCommand(CommandIds.run, {
      label: () => `soopervisor: Run (${model.settings.defaultMode}, the default mode)`,
      caption: 'Start a run of the project in the default mode of the settings',
      icon: soopervisorIcon,
      execute: args => run(model.settings.defaultMode, target(args))
    });
    const modes = [
      { mode: 'sample', id: CommandIds.runSample, label: 'Sample run', caption: 'Run the pipeline with sample: true in a clean container' },
      { mode: 'full', id: CommandIds.runFull, label: 'Full run', caption: 'Run the whole pipeline in a clean container' }
    ] as const;
    for (const { mode, id, label, caption } of modes) {
      commands.addCommand(id, {
        label: args => (args.fromBrowser ? `${label} (soopervisor)` : `soopervisor: ${label}`),
        caption,
        icon: soopervisorIcon,
        isVisible,
        execute: args => run(mode, target(args))
      });
    }
    commands.addCommand(CommandIds.validate, {
      label: 'soopervisor: Validate the project',
      caption: 'Check the file browser’s folder as `soopervisor validate` does',
      execute: () => {
        openPanel();
        model.validateNow();
      }
    });
    commands.addCommand(CommandIds.open, {
      label: 'soopervisor: Open the runs panel',
      icon: soopervisorIcon,
      execute: openPanel
    });
    commands.addCommand(CommandIds.showLog, {
      label: 'soopervisor: Show the log of a run',
      execute: args => {
        openPanel();
        if (typeof args.runId === 'string') {
          model.showRun(args.runId);
        }
      }
    });
    for (const command of [CommandIds.run, CommandIds.runSample, CommandIds.runFull, CommandIds.validate, CommandIds.open]) {
      palette?.addItem({ command, category: CATEGORY });
    }

    app.docRegistry.addWidgetExtension('Notebook', new NotebookRunButton(commands, soopervisorIcon, local));

    if (statusBar) {
      const item = new RunsStatus(model, commands);
      statusBar.registerStatusItem('soopervisor:runs', {
        item,
        align: 'left',
        rank: 5,
        isActive: () => item.isActiveNow,
        activeStateChanged: item.activeStateChanged
      });
    }
    notifyRunEnds(model, commands);

    // the main-area views: a run (runview.ts), a commit's sets (commitview.ts), two commits compared (compareview.ts)
    const views = { app, client, model, opener, icon: soopervisorIcon, palette, restorer, category: CATEGORY };
    registerRunView(views);
    registerCommitView(views);
    registerCompareView(views);
    // the sidebar's ⤢ buttons: a run's header opens the run view, a commit row the commit view
    panel.openRun = runId => void commands.execute(OPEN_RUN, { runId });
    model.openCommit = (project, commit, runId) => void commands.execute(OPEN_COMMIT, { project, commit, runId });
    // the status bar and the notifications watch runs even while the panel is closed
    model.watchActivity();

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = () => model.setSettings(readSettings(settings.composite as Record<string, unknown>));
          apply();
          settings.changed.connect(apply);
        })
        .catch(e => console.error('soopervisor: cannot read the settings:', e));
    }
  }
};

export default plugin;
