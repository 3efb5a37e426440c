/**
 * soopervisor's JupyterLab sidebar: validate the file browser's folder, start
 * sample/full runs, follow their logs, download artifacts by commit.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { LabIcon } from '@jupyterlab/ui-components';

import iconSvg from '../style/icon.svg';
import { ApiClient } from './api';
import { jupyterTransport } from './jupyter';
import { SoopervisorModel } from './model';
import { SoopervisorPanel } from './panel';

export const soopervisorIcon = new LabIcon({ name: 'soopervisor:icon', svgstr: iconSvg });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'soopervisor:plugin',
  description: 'The soopervisor sidebar: validate, run, follow logs, download artifacts.',
  autoStart: true,
  optional: [IDefaultFileBrowser, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    browser: IDefaultFileBrowser | null,
    restorer: ILayoutRestorer | null
  ) => {
    const model = new SoopervisorModel(new ApiClient(jupyterTransport()));
    const panel = new SoopervisorPanel(model);
    panel.title.icon = soopervisorIcon;
    panel.title.caption = 'soopervisor';
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'soopervisor-panel');

    if (browser) {
      // the contents API path without a drive prefix, relative to the server root
      const local = (p: string) => app.serviceManager.contents.localPath(p);
      model.path = local(browser.model.path);
      browser.model.pathChanged.connect((_, change) => model.setPath(local(change.newValue ?? '')));
    }
  }
};

export default plugin;
