/**
 * The dashboard of `soopervisor serve` (src/dashboard/, compiled by tsc into
 * lib/dashboard/) bundled into ../soopervisor/server/dashboard/: index.html, one
 * JS and one CSS file, their names hashed so a new build is never served from
 * a stale cache. Uses the webpack that @jupyterlab/builder brings; no loader.
 */
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const OUT = path.resolve(__dirname, '../soopervisor/server/dashboard');
// the sidebar's styles, then the dashboard's (which defines the theme variables they read)
const STYLES = ['style/base.css', 'style/dashboard.css'];

function hashOf(text) {
  return crypto.createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/** Emits the CSS, the icon and index.html naming the hashed files. */
class DashboardPage {
  apply(compiler) {
    const { RawSource } = compiler.webpack.sources;
    compiler.hooks.thisCompilation.tap('DashboardPage', compilation => {
      compilation.hooks.processAssets.tap(
        { name: 'DashboardPage', stage: compiler.webpack.Compilation.PROCESS_ASSETS_STAGE_SUMMARIZE },
        () => {
          const css = STYLES.map(f => `/* ${f} */\n` + fs.readFileSync(path.resolve(__dirname, f), 'utf8')).join('\n');
          const cssName = `dashboard.${hashOf(css)}.css`;
          compilation.emitAsset(cssName, new RawSource(css));
          const icon = fs.readFileSync(path.resolve(__dirname, 'style/icon.svg'));
          compilation.emitAsset('icon.svg', new RawSource(icon));
          const js = [...compilation.chunks].flatMap(c => [...c.files]).filter(f => f.endsWith('.js'));
          const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<title>soopervisor</title>
<link rel="icon" href="icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="${cssName}">
${js.map(f => `<script defer src="${f}"></script>`).join('\n')}
</head>
<body>
<div id="soopervisor-dashboard"><noscript>The soopervisor dashboard needs JavaScript.</noscript></div>
</body>
</html>
`;
          compilation.emitAsset('index.html', new RawSource(html));
        }
      );
    });
  }
}

module.exports = {
  mode: 'production',
  entry: { dashboard: path.resolve(__dirname, 'lib/dashboard/index.js') },
  output: {
    path: OUT,
    filename: '[name].[contenthash:8].js',
    publicPath: '',
    clean: true
  },
  devtool: false,
  performance: { hints: false },
  plugins: [new DashboardPage()]
};
