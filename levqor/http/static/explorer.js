// The GraphiQL page at /graphql. A file of its own, not an inline script, so that the page's
// Content-Security-Policy can allow scripts from this origin only (levqor/http/graphiql.py).
"use strict";

const WELCOME = `# Levqor's GraphQL API. Ctrl-Enter runs the query; Ctrl-Space completes.
#
# With API keys configured, send yours from the Headers tab below, as
#   {"X-Api-Key": "lvq_..."}
# It goes with every request, and in the connection_init of subscriptions.

{
  health {
    ok
  }
}
`;

// The query and variables live in the address, so a page can be shared; headers do not, since
// they hold the key (GraphiQL keeps them in this browser's storage instead).
const parameters = new URLSearchParams(window.location.search);

function keepInAddress(name, value) {
  if (value) {
    parameters.set(name, value);
  } else {
    parameters.delete(name);
  }
  const search = parameters.toString();
  history.replaceState(null, "", search ? `?${search}` : window.location.pathname);
}

const endpoint = new URL(window.location.pathname, window.location.origin);
const subscriptionUrl = new URL(endpoint);
subscriptionUrl.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

const fetcher = GraphiQL.createFetcher({
  url: endpoint.toString(),
  subscriptionUrl: subscriptionUrl.toString(),
});

function LevqorGraphiQL() {
  const [query, setQuery] = React.useState(parameters.get("query") || WELCOME);
  const [variables, setVariables] = React.useState(parameters.get("variables") || undefined);
  const explorer = React.useMemo(() => GraphiQLPluginExplorer.explorerPlugin(), []);

  return React.createElement(GraphiQL, {
    fetcher,
    plugins: [explorer],
    query,
    variables,
    onEditQuery(value) {
      setQuery(value);
      keepInAddress("query", value);
    },
    onEditVariables(value) {
      setVariables(value);
      keepInAddress("variables", value);
    },
    defaultEditorToolsVisibility: true,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: true,
    inputValueDeprecation: true,
  });
}

ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(LevqorGraphiQL));
