// The node search box finds the pack's nodes by their search aliases too ("orbit" -> ReCapture Camera
// Trajectory, "novel view", "re-film"...). The server sends them in each node's definition under
// `search_aliases` (nodes/_api.py), the key newer ComfyUI frontends search themselves; frontend 1.32 searches
// only names and display names, so this adds the nodes whose aliases match to the front of its results.
// It reaches the search through the frontend's node definition store, which is no public API: when it is
// not there (another frontend), the search stays as it is. Never throws.
const PATCHED = Symbol("recapture search aliases");
const MIN_QUERY = 3;
let warned = false;

function warnOnce(message, error) {
  if (warned) return;
  warned = true;
  console.warn(`[ReCapture] node search aliases: ${message}`, error);
}

/** The frontend's node definition store (Pinia), or null. */
function nodeDefStore() {
  const pinia = document.getElementById("vue-app")?.__vue_app__?.config?.globalProperties?.$pinia;
  return pinia?._s?.get("nodeDef") ?? null;
}

const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The node definitions among ``defs`` with an alias that matches ``query`` (case-insensitive: a word of
 * the alias starts with the query, "orb" -> "orbit", or the query holds the whole alias as words,
 * "orbit left" -> "orbit"). */
export function aliasMatches(defs, query) {
  const q = String(query ?? "").trim().toLowerCase();
  if (q.length < MIN_QUERY) return [];
  const startsWord = new RegExp(`\\b${escape(q)}`);
  return defs.filter((def) => Array.isArray(def?.search_aliases) && def.search_aliases.some((alias) => {
    const a = String(alias).toLowerCase();
    return startsWord.test(a) || new RegExp(`\\b${escape(a)}\\b`).test(q);
  }));
}

/** Makes the node search box also find nodes by their ``search_aliases``; true once it is in place. */
export function addSearchAliases() {
  try {
    const service = nodeDefStore()?.nodeSearchService;
    const proto = service && Object.getPrototypeOf(service);
    if (!proto || typeof proto.searchNode !== "function") return false;
    if (proto[PATCHED]) return true;
    const original = proto.searchNode;
    proto.searchNode = function (query, filters = [], options, ...rest) {
      const results = original.call(this, query, filters, options, ...rest);
      try {
        const defs = this.nodeFuseSearch?.data;
        if (!Array.isArray(defs) || !Array.isArray(results)) return results;
        const wildcard = rest[0]?.matchWildcards === false ? undefined : "*";
        const hits = aliasMatches(defs, query).filter((def) => (filters ?? []).every(
          ({ filterDef, value }) => filterDef.matches(def, value, { wildcard })));
        if (!hits.length) return results;
        const merged = [...hits, ...results.filter((def) => !hits.includes(def))];
        return options?.limit ? merged.slice(0, options.limit) : merged;
      } catch (e) {
        warnOnce("could not add alias matches to a search", e);
        return results;
      }
    };
    proto[PATCHED] = true;
    return true;
  } catch (e) {
    warnOnce("the node search could not be extended", e);
    return false;
  }
}
