// l3ha's dashboard: polls state.json every second and shows it; the
// switchover buttons call the API. Everything that comes from the server
// is put in the page as text (textContent), never as markup: router names
// are chosen by tenants.
'use strict';

(() => {
  const TOKEN_KEY = 'l3ha.dashboard.token';
  const POLL_MS = 1000;

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('data-')) e.setAttribute(k, String(v));
      else if (k === 'title') e.title = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  };

  let pollTimer = null;
  let polling = false;
  let clockOffset = 0; // server time minus browser time, ms
  let benchShown = false;
  let benchNextTry = 0; // Date.now() after which to ask for the plot again
  let switchoverSeq = 0;
  const routerRows = new Map(); // router id → {key, tr}
  let seenTransitions = null; // keys of the transitions shown last time

  const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

  function headers(extra) {
    const h = Object.assign({ Accept: 'application/json' }, extra || {});
    const t = token();
    if (t) h['X-Auth-Token'] = t;
    return h;
  }

  // neutronError reads a NeutronError body, or makes one of the status.
  async function neutronError(resp) {
    try {
      const body = await resp.json();
      if (body && body.NeutronError) {
        return { type: body.NeutronError.type || '', message: body.NeutronError.message || '' };
      }
    } catch (_) { /* not JSON: fall through */ }
    return { type: '', message: `${resp.status} ${resp.statusText}`.trim() };
  }

  function setState(s) { document.body.dataset.state = s; }

  function showError(msg) {
    const e = $('error');
    e.textContent = msg;
    e.hidden = !msg;
  }

  function setStatus(text, ok) {
    const s = $('status');
    s.textContent = text;
    s.dataset.ok = ok ? 'true' : 'false';
  }

  function showLogin(msg) {
    setState('login');
    $('login').hidden = false;
    $('content').hidden = true;
    const e = $('login-error');
    e.textContent = msg || '';
    e.hidden = !msg;
    $('logout').hidden = !token();
    setStatus('not signed in', false);
    $('token').focus();
  }

  // ---- time

  const pad = (n, w) => String(n).padStart(w || 2, '0');

  // clock shows a time as HH:MM:SS.mmm UTC, as the CLI and the logs do.
  function clock(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return '';
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
  }

  function ago(iso) {
    const ms = Date.now() + clockOffset - Date.parse(iso);
    if (isNaN(ms)) return '';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  // timeAgo is a time with its age; the age is refreshed every poll
  // without rebuilding the element (updateAges).
  function timeAgo(iso) {
    return el('span', { class: 'when', title: iso },
      el('time', { datetime: iso }, clock(iso)), ' ', el('span', { class: 'age', 'data-at': iso }, `(${ago(iso)})`));
  }

  function updateAges() {
    for (const a of document.querySelectorAll('.age[data-at]')) {
      a.textContent = `(${ago(a.dataset.at)})`;
    }
  }

  // ---- rendering

  function stateBadge(state) {
    return el('span', { class: `badge ha-${state}` }, state);
  }

  function renderAgents(agents) {
    const rows = agents.map((a) => el('tr', { class: 'agent', 'data-agent-id': a.id, 'data-host': a.host, 'data-alive': a.alive },
      el('td', { class: 'host' }, a.host),
      el('td', {}, el('span', { class: a.alive ? 'dot alive' : 'dot dead' }), a.alive ? 'alive' : 'dead'),
      el('td', {}, a.admin_state_up ? 'up' : 'down'),
      el('td', { class: 'num routers' }, String(a.routers)),
      el('td', { class: 'num masters' }, String(a.masters)),
      el('td', {}, timeAgo(a.heartbeat_at))));
    $('agents').tBodies[0].replaceChildren(...rows);
  }

  function transitionText(t) {
    return `${t.host} ${t.from} → ${t.to}`;
  }

  function reasonBadge(reason) {
    return el('span', { class: 'reason' }, reason || 'no reason given');
  }

  function bindingCell(r, b) {
    const soleMaster = b.ha_state === 'active' && !r.split_brain;
    const cell = el('div', {
      class: `binding${b.alive ? '' : ' dead'}`, 'data-host': b.host, 'data-agent-id': b.agent_id,
      'data-ha-state': b.ha_state, 'data-alive': b.alive,
    }, el('span', { class: 'host' }, b.host), ' ', stateBadge(b.ha_state));
    if (!b.alive) {
      cell.append(' ', el('span', { class: 'note' }, 'agent dead'));
    } else if (!soleMaster) {
      cell.append(' ', el('button', {
        type: 'button', class: 'switchover', 'data-router-id': r.id, 'data-router-name': r.name,
        'data-agent-id': b.agent_id, 'data-host': b.host, title: `Move the master of ${r.name || r.id} to ${b.host}`,
      }, 'make master'));
    }
    return cell;
  }

  function routerRow(r) {
    let master;
    if (r.split_brain) {
      const hosts = r.bindings.filter((b) => b.ha_state === 'active').map((b) => b.host);
      master = el('span', { class: 'split' }, `split brain: ${hosts.join(', ')}`);
    } else if (r.master) {
      master = el('span', { class: 'master' }, r.master);
    } else {
      master = el('span', { class: 'none' }, 'none');
    }
    const lt = r.last_transition;
    return el('tr', {
      class: 'router', 'data-router-id': r.id, 'data-router-name': r.name, 'data-master': r.master,
      'data-split-brain': r.split_brain,
    },
    el('td', {}, el('div', { class: 'name' }, r.name || '(no name)'), el('div', { class: 'id' }, r.id),
      r.admin_state_up ? null : el('div', { class: 'note' }, 'admin down')),
    el('td', { class: 'project' }, r.project_id),
    el('td', { class: 'master-cell' }, master),
    el('td', { class: 'bindings' }, ...r.bindings.map((b) => bindingCell(r, b))),
    el('td', { class: 'last-transition' }, lt
      ? el('div', {}, el('div', {}, transitionText(lt), ' ', reasonBadge(lt.reason)), timeAgo(lt.at))
      : el('span', { class: 'none' }, 'none')));
  }

  // renderRouters rebuilds only the rows that changed, and moves rows
  // only when the order changed, so that a button under the pointer is
  // not replaced between press and release (the click would be lost).
  function renderRouters(routers) {
    const tbody = $('routers').tBodies[0];
    const want = [];
    const live = new Set();
    for (const r of routers) {
      const key = JSON.stringify(r, (k, v) => (k === 'reported_at' ? undefined : v));
      let row = routerRows.get(r.id);
      if (!row || row.key !== key) {
        const tr = routerRow(r);
        if (row) row.tr.replaceWith(tr);
        row = { key, tr };
        routerRows.set(r.id, row);
      }
      live.add(r.id);
      want.push(row.tr);
    }
    for (const [id, row] of routerRows) {
      if (!live.has(id)) {
        row.tr.remove();
        routerRows.delete(id);
      }
    }
    const have = Array.from(tbody.children);
    if (have.length !== want.length || have.some((tr, i) => tr !== want[i])) {
      tbody.replaceChildren(...want);
    }
    $('router-count').textContent = `(${routers.length})`;
    $('no-routers').hidden = routers.length > 0;
  }

  function renderTimeline(transitions) {
    const key = (t) => `${t.at}|${t.router_id}|${t.agent_id}|${t.to}`;
    const now = new Set(transitions.map(key));
    const items = transitions.slice().reverse().map((t) => el('li', {
      class: `transition to-${t.to}${seenTransitions && !seenTransitions.has(key(t)) ? ' new' : ''}`,
      'data-router-id': t.router_id, 'data-host': t.host, 'data-from': t.from, 'data-to': t.to, 'data-reason': t.reason,
    },
    timeAgo(t.at), ' ',
    el('span', { class: 'router-name', title: t.router_id }, t.router_name || t.router_id), ' ',
    el('span', { class: 'change' }, transitionText(t)), ' ',
    reasonBadge(t.reason)));
    // Unchanged: left alone, so that the "new" highlight is not restarted.
    if (!seenTransitions || now.size !== seenTransitions.size || [...now].some((k) => !seenTransitions.has(k))) {
      $('timeline').replaceChildren(...items);
    }
    seenTransitions = now;
    $('no-transitions').hidden = transitions.length > 0;
  }

  // loadBenchPlot fetches the plot with the token (an <img src> could not
  // send it) and shows it from memory; a plot not made yet is asked for
  // again a minute later.
  async function loadBenchPlot() {
    benchNextTry = Date.now() + 60000;
    try {
      const resp = await fetch('bench.svg', { headers: headers({ Accept: 'image/svg+xml' }), cache: 'no-cache' });
      if (!resp.ok) return;
      const blob = await resp.blob();
      $('bench').src = URL.createObjectURL(blob);
      $('bench-section').hidden = false;
      benchShown = true;
    } catch (_) { /* asked again later */ }
  }

  function render(st) {
    clockOffset = Date.parse(st.generated_at) - Date.now();
    renderAgents(st.agents);
    renderRouters(st.routers);
    renderTimeline(st.transitions);
    updateAges();
    if (st.bench_plot && !benchShown && Date.now() >= benchNextTry) loadBenchPlot();
    const alive = st.agents.filter((a) => a.alive).length;
    setStatus(`updated ${clock(st.generated_at)} · ${alive}/${st.agents.length} agents alive · ${st.routers.length} HA routers`, true);
  }

  // ---- polling

  function schedule(ms) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, ms);
  }

  async function poll() {
    if (polling) return;
    polling = true;
    const started = Date.now();
    let again = true;
    try {
      const resp = await fetch('state.json', { headers: headers(), cache: 'no-store' });
      if (resp.status === 401) {
        again = false; // until a token is given
        showLogin(token() ? 'The server refused this token (expired, revoked or mistyped).' : '');
        return;
      }
      if (!resp.ok) {
        const e = await neutronError(resp);
        if (resp.status === 403) {
          again = false;
          showLogin(`This token is not an admin's: ${e.message}`);
          return;
        }
        showError(`state.json: ${e.message}${e.type ? ` (${resp.status} ${e.type})` : ''}`);
        setStatus('error', false);
        return;
      }
      const st = await resp.json();
      showError('');
      $('login').hidden = true;
      $('content').hidden = false;
      $('logout').hidden = !token();
      render(st);
      setState('ready');
    } catch (err) {
      showError(`Cannot reach the server: ${err.message}`);
      setStatus('disconnected', false);
    } finally {
      polling = false;
      if (again) schedule(Math.max(0, POLL_MS - (Date.now() - started)));
    }
  }

  // ---- switchover

  async function switchover(btn) {
    const { routerId, routerName, agentId, host } = btn.dataset;
    const name = routerName || routerId;
    const out = $('switchover-result');
    switchoverSeq += 1;
    const seq = switchoverSeq;
    Object.assign(out.dataset, { seq: String(seq), outcome: 'pending', status: '', routerId, agentId, host, type: '' });
    out.className = 'banner';
    out.textContent = `Moving the master of ${name} to ${host}…`;
    out.hidden = false;
    btn.disabled = true;
    let outcome = 'error';
    let status = 0;
    let type = '';
    let text;
    try {
      const resp = await fetch(`../v2.0/routers/${encodeURIComponent(routerId)}/switchover`, {
        method: 'POST',
        headers: headers({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ agent_id: agentId }),
      });
      status = resp.status;
      if (resp.ok) {
        outcome = 'ok';
        text = `Switchover of ${name} to ${host} accepted (${status}): the master moves in a moment.`;
      } else {
        const e = await neutronError(resp);
        type = e.type;
        text = `Switchover of ${name} to ${host} failed: ${e.message} (${status}${type ? ` ${type}` : ''})`;
      }
    } catch (err) {
      text = `Switchover of ${name} to ${host} failed: ${err.message}`;
    }
    if (seq !== switchoverSeq) return; // a later click owns the banner
    Object.assign(out.dataset, { outcome, status: String(status), type });
    out.className = outcome === 'ok' ? 'banner ok' : 'banner error';
    out.textContent = text;
    btn.disabled = false;
    schedule(0); // show the move as soon as the server has it
  }

  // ---- start

  document.addEventListener('DOMContentLoaded', () => {
    $('routers').addEventListener('click', (ev) => {
      const btn = ev.target.closest('button.switchover');
      if (btn && !btn.disabled) switchover(btn);
    });
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token').value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      $('token').value = '';
      $('login-error').hidden = true;
      setState('loading');
      setStatus('signing in…', false);
      benchNextTry = 0;
      schedule(0);
    });
    $('logout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      clearTimeout(pollTimer);
      routerRows.clear();
      seenTransitions = null;
      $('routers').tBodies[0].replaceChildren();
      $('agents').tBodies[0].replaceChildren();
      $('timeline').replaceChildren();
      showLogin('');
    });
    poll();
  });
})();
