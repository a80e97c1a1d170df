// What the pack's in-node views (camera editor, anchor player) share. Relative imports only.

/** Adds ``element`` to ``node`` as a view, not an input: kept out of the saved widgets_values (which
 * are positional) and out of the API prompt. */
export function addNodeView(node, name, type, element, minHeight) {
  const widget = node.addDOMWidget(name, type, element, {
    getMinHeight: () => minHeight,
    hideOnZoom: false,
    serialize: false,
  });
  widget.serialize = false;
  widget.serializeValue = () => undefined;
  return widget;
}

/** Runs ``fn`` after ``method`` of ``target`` (a node, or a widget's callback), through ``guard`` so a
 * failing view never breaks the node. */
export function runAfter(target, method, guard, fn) {
  const original = target[method];
  target[method] = function (...args) {
    const result = original?.apply(this, args);
    guard(() => fn(...args));
    return result;
  };
}
