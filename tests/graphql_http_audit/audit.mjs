// Runs graphql-http's server audit against the URL given as the first argument and prints the
// results as JSON: [{id, name, status, reason}], status "ok", "warn" or "error".
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const results = await auditServer({ url });
const rows = await Promise.all(
  results.map(async (result) => ({
    id: result.id,
    name: result.name,
    status: result.status,
    reason: result.status === 'ok' ? undefined : result.reason,
    response:
      result.status === 'ok' || !result.response
        ? undefined
        : { status: result.response.status, body: await result.response.text().catch(() => '') },
  })),
);
process.stdout.write(JSON.stringify(rows, null, 1) + '\n');
