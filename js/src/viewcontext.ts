/**
 * What the main-area views (run view, commit view, compare view) are given by the
 * plugin: the app, the one API client and sidebar model, the artifact opener, and
 * the optional palette and layout restorer. Each view module exports one
 * `register…(ctx)` that adds its commands; index.ts calls them.
 */
import { ILayoutRestorer, JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';

import { ApiClient } from './api';
import { SoopervisorModel } from './model';
import { ArtifactOpener } from './opener';

export interface IViewContext {
  app: JupyterFrontEnd;
  client: ApiClient;
  model: SoopervisorModel;
  opener: ArtifactOpener;
  icon: LabIcon;
  palette: ICommandPalette | null;
  restorer: ILayoutRestorer | null;
  /** the palette's category of soopervisor's commands */
  category: string;
}
