// The live view: one EventSource (/api/events) pushes a `state` document, then every event;
// this script keeps a model from them and redraws. No polling: the page only reads the API
// when the operator hovers a switch (its candidates, read from the store at that moment).
//
// Everything shown comes from the store and is untrusted: text goes into the DOM through
// textContent and dataset only (never innerHTML), and cytoscape draws labels on a canvas.
// Tests read the model through window.coordView (model(), when()).
'use strict';
(function () {
  const MAX_FEED = 200;
  const PALETTE = ['#1e88e5', '#e53935', '#43a047', '#8e24aa', '#fb8c00', '#00897b',
    '#6d4c41', '#3949ab', '#c0ca33', '#d81b60', '#00acc1', '#5e35b1'];
  const NO_MASTER = '#9e9e9e';

  const model = {
    backend: '', server: null, session: 'connecting', stream: 'connecting',
    members: [], leaders: new Map(), records: new Map(),
    updates: 0, lastApplied: 0, leaderAppliedAt: {},
  };
  const waiters = [];

  const $ = (id) => document.getElementById(id);
  function text(node, value) { node.textContent = value == null ? '-' : String(value); return node; }
  function cell(row, value, cls) {
    const td = text(document.createElement('td'), value);
    if (cls) td.className = cls;
    td.title = td.textContent;
    row.appendChild(td);
    return td;
  }
  // Members get palette colours in member-id order (distinct for up to 12 members, stable
  // while the member list is); a leader not in the list gets one by hash.
  function colour(member) {
    if (member == null) return NO_MASTER;
    const ids = model.members.map((m) => m.member_id).sort();
    let i = ids.indexOf(member);
    if (i < 0) {
      i = 0;
      for (let k = 0; k < member.length; k++) i = (i * 31 + member.charCodeAt(k)) >>> 0;
    }
    return PALETTE[i % PALETTE.length];
  }
  function short(value, n) {
    const s = String(value);
    return s.length > n ? s.slice(0, n - 1) + '\u2026' : s;
  }
  function dpidOf(election) {
    return election.startsWith('dpid-') ? election.slice(5) : null;
  }

  // ---- the model ------------------------------------------------------------------------
  function masters() {
    const out = {};
    for (const [name, lead] of model.leaders) {
      const dpid = dpidOf(name);
      if (dpid === null) continue;
      const rec = model.records.get('mastership/' + dpid);
      out[dpid] = {
        leader: lead.leader, term: lead.term,
        confirmed: Boolean(rec && lead.leader != null && rec.owner === lead.leader &&
                           rec.term === lead.term && !rec.hint),
        hint: rec && rec.owner === lead.leader && rec.hint ? rec.hint : '',
      };
    }
    return out;
  }

  function recordsOf(kind) {
    const out = [];
    for (const rec of model.records.values()) if (rec.kind === kind) out.push(rec);
    return out;
  }

  function snapshotModel() {
    return {
      backend: model.backend, session: model.session, stream: model.stream,
      switches: cy ? cy.nodes('[kind = "switch"]').map((n) => n.data('dpid')).sort() : [],
      links: recordsOf('link').map((l) => [l.src, l.dst]),
      hosts: recordsOf('host').map((h) => h.mac),
      masters: masters(),
      members: model.members.map((m) => ({ member_id: m.member_id, alive: m.alive })),
      updates: model.updates, lastApplied: model.lastApplied,
      leaderAppliedAt: Object.assign({}, model.leaderAppliedAt),
    };
  }

  function setRecord(rec) { model.records.set(rec.kind + '/' + rec.key, rec); }

  function apply(ev) {
    switch (ev.type) {
      case 'state':
        model.backend = ev.backend;
        model.server = ev.server;
        model.session = ev.server.session;
        model.members = ev.members;
        model.leaders = new Map(ev.elections.map((e) => [e.election, { leader: e.leader, term: e.term }]));
        model.records = new Map();
        for (const list of Object.values(ev.topology)) list.forEach(setRecord);
        clearFeed();
        ev.history.forEach(feed);
        break;
      case 'leader':
        model.leaders.set(ev.election, { leader: ev.leader, term: ev.term });
        model.leaderAppliedAt[ev.election] = Date.now();
        break;
      case 'topology':
        if (ev.record) setRecord(ev.record); else model.records.delete(ev.kind + '/' + ev.key);
        break;
      case 'snapshot':
        model.records = new Map();
        ev.records.forEach(setRecord);
        break;
      case 'session':
        model.session = ev.state;
        break;
      case 'members':
        model.members = ev.members;
        break;
      default:
        return;
    }
    if (ev.type !== 'state') feed(ev);
    model.updates += 1;
    model.lastApplied = Date.now();
    render();
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i];
      const snap = snapshotModel();
      if (w.pred(snap)) { waiters.splice(i, 1); w.done(snap); }
    }
  }

  // ---- drawing --------------------------------------------------------------------------
  let cy = null;

  function desiredElements() {
    const ms = masters();
    const nodes = new Map();
    const edges = new Map();
    function switchNode(dpid) {
      if (!nodes.has('s' + dpid)) {
        const m = ms[dpid] || { leader: null, term: null, confirmed: false };
        nodes.set('s' + dpid, {
          group: 'nodes',
          data: { id: 's' + dpid, kind: 'switch', dpid: dpid, master: m.leader, term: m.term,
                  confirmed: m.confirmed ? 'yes' : 'no', color: colour(m.leader),
                  label: dpid.replace(/^0+(?=.)/, '') + (m.leader != null ? '\n' + short(m.leader, 24) : ''),
                  known: 'no' },
        });
      }
      return nodes.get('s' + dpid);
    }
    for (const rec of recordsOf('switch')) switchNode(rec.key).data.known = 'yes';
    for (const dpid of Object.keys(ms)) switchNode(dpid);
    for (const link of recordsOf('link')) {
      switchNode(link.src); switchNode(link.dst);
      edges.set('l' + link.key, { group: 'edges',
        data: { id: 'l' + link.key, kind: 'link', source: 's' + link.src, target: 's' + link.dst } });
    }
    for (const host of recordsOf('host')) {
      switchNode(host.switch);
      nodes.set('h' + host.key, { group: 'nodes',
        data: { id: 'h' + host.key, kind: 'host', mac: host.mac, label: host.mac,
                color: '#cfd8dc', ips: (host.ips || []).join(' ') } });
      edges.set('e' + host.key, { group: 'edges',
        data: { id: 'e' + host.key, kind: 'attach', source: 'h' + host.key,
                target: 's' + host.switch } });
    }
    return [...nodes.values(), ...edges.values()];
  }

  function renderGraph() {
    if (!cy) return;
    const want = desiredElements();
    const ids = new Set(want.map((e) => e.data.id));
    let structural = false;
    cy.batch(() => {
      cy.elements().forEach((el) => { if (!ids.has(el.id())) { el.remove(); structural = true; } });
      for (const el of want) {
        const have = cy.getElementById(el.data.id);
        if (have.empty()) { cy.add(el); structural = true; } else have.data(el.data);
      }
    });
    if (structural) {
      cy.layout({ name: 'cose', animate: false, fit: true, padding: 30, randomize: false }).run();
    }
  }

  function renderMembers() {
    const body = $('members').tBodies[0];
    body.replaceChildren();
    for (const m of model.members) {
      const row = document.createElement('tr');
      row.dataset.member = m.member_id;
      row.dataset.alive = m.alive ? 'yes' : 'no';
      if (!m.alive) row.className = 'dead';
      const first = cell(row, '');
      const dot = document.createElement('span');
      dot.className = 'swatch';
      dot.style.background = colour(m.member_id);
      first.append(dot, document.createTextNode(m.member_id));
      cell(row, m.address);
      cell(row, m.alive ? 'yes' : 'gone');
      cell(row, m.leads);
      body.appendChild(row);
    }
    const legend = $('legend');
    legend.replaceChildren();
    for (const m of model.members) {
      const dot = document.createElement('span');
      dot.className = 'swatch';
      dot.style.background = colour(m.member_id);
      legend.append(dot, document.createTextNode(m.member_id));
    }
  }

  function renderMasters() {
    const body = $('masters').tBodies[0];
    const before = new Map([...body.rows].map((r) => [r.dataset.dpid, r.dataset.master]));
    body.replaceChildren();
    const ms = masters();
    for (const dpid of Object.keys(ms).sort()) {
      const m = ms[dpid];
      const row = document.createElement('tr');
      row.dataset.dpid = dpid;
      row.dataset.master = m.leader == null ? '' : m.leader;
      row.dataset.term = m.term == null ? '' : String(m.term);
      if (before.has(dpid) && before.get(dpid) !== row.dataset.master) row.className = 'flash';
      cell(row, dpid, 'mono');
      const who = cell(row, '');
      const dot = document.createElement('span');
      dot.className = 'swatch';
      dot.style.background = colour(m.leader);
      who.append(dot, document.createTextNode(m.leader == null ? '(none)' : m.leader));
      cell(row, m.term, 'mono');
      cell(row, m.confirmed ? 'yes' : (m.hint ? 'no: ' + m.hint : 'no'));
      cell(row, '', 'actions');  // room for move / balance
      body.appendChild(row);
    }
  }

  function render() {
    text($('backend'), model.backend);
    const session = $('session');
    session.dataset.state = model.session;
    text(session, 'session: ' + model.session);
    renderMembers();
    renderMasters();
    renderGraph();
  }

  function describe(ev) {
    switch (ev.type) {
      case 'leader': return ev.election + ': leader ' + (ev.leader == null ? '(none)' : ev.leader) +
        (ev.term == null ? '' : ' term ' + ev.term) +
        (ev.previous && ev.previous.leader != null ? ' (was ' + ev.previous.leader + ')' : '');
      case 'topology': return ev.op + ' ' + ev.kind + ' ' + ev.key + ' by ' + ev.owner;
      case 'snapshot': return 'topology resynchronised (' +
        (Array.isArray(ev.records) ? ev.records.length : ev.records) + ' records)';
      case 'session': return 'session ' + ev.state;
      case 'members': return 'members: ' + (Array.isArray(ev.members)
        ? ev.members.filter((m) => m.alive).length + ' alive of ' + ev.members.length
        : ev.alive + ' alive of ' + ev.count);
      default: return ev.type;
    }
  }

  function clearFeed() { $('events').replaceChildren(); }

  function feed(ev) {
    const list = $('events');
    const li = document.createElement('li');
    li.dataset.type = ev.type;
    const when = new Date((ev.time || 0) * 1000).toISOString().slice(11, 23);
    text(li, when + '  ' + describe(ev));
    list.prepend(li);
    while (list.children.length > MAX_FEED) list.lastChild.remove();
  }

  // ---- hover: candidates, read now --------------------------------------------------------
  function showTip(evt) {
    const d = evt.target.data();
    const tip = $('tip');
    const pos = evt.originalEvent ? evt.originalEvent : { clientX: 0, clientY: 0 };
    tip.style.left = (pos.clientX + 12) + 'px';
    tip.style.top = (pos.clientY + 12) + 'px';
    if (d.kind === 'host') {
      text(tip, 'host ' + d.mac + (d.ips ? '\n' + d.ips : ''));
      tip.hidden = false;
      return;
    }
    const lines = ['switch ' + d.dpid, 'master ' + (d.master == null ? '(none)' : d.master) +
      (d.term == null ? '' : '  term ' + d.term), 'confirmed by the switch: ' + d.confirmed];
    text(tip, lines.join('\n'));
    tip.hidden = false;
    fetch('/api/elections/dpid-' + encodeURIComponent(d.dpid))
      .then((r) => (r.ok ? r.json() : null))
      .then((doc) => {
        if (!doc || tip.hidden) return;
        const cands = doc.candidates.map((c, i) => (i + 1) + '. ' + c.member_id + ' (priority ' +
          c.priority + ')');
        text(tip, lines.concat(['candidates:'], cands).join('\n'));
      })
      .catch(() => {});
  }

  // ---- start ----------------------------------------------------------------------------
  function start() {
    cy = cytoscape({
      container: $('graph'),
      maxZoom: 1.6,
      style: [
        { selector: 'node[kind = "switch"]', style: {
          'shape': 'round-rectangle', 'width': 46, 'height': 30,
          'background-color': 'data(color)', 'label': 'data(label)', 'text-wrap': 'wrap',
          'text-valign': 'bottom', 'text-margin-y': 4, 'font-size': 11,
          'border-width': 2, 'border-color': '#263238' } },
        { selector: 'node[kind = "switch"][confirmed = "no"]', style: { 'border-style': 'dashed' } },
        { selector: 'node[kind = "switch"][known = "no"]', style: { 'opacity': 0.6 } },
        { selector: 'node[kind = "host"]', style: {
          'shape': 'ellipse', 'width': 14, 'height': 14, 'background-color': 'data(color)',
          'label': 'data(label)', 'font-size': 8, 'text-valign': 'bottom' } },
        { selector: 'edge', style: { 'width': 2, 'line-color': '#90a4ae', 'curve-style': 'bezier' } },
        { selector: 'edge[kind = "attach"]', style: { 'width': 1, 'line-style': 'dotted' } },
      ],
    });
    cy.on('mouseover', 'node', showTip);
    cy.on('mouseout', 'node', () => { $('tip').hidden = true; });
    const stream = $('stream');
    const es = new EventSource('/api/events');
    es.onopen = () => { model.stream = 'live'; stream.dataset.state = 'live'; text(stream, 'stream: live'); };
    es.onerror = () => {
      model.stream = 'reconnecting'; stream.dataset.state = 'reconnecting';
      text(stream, 'stream: reconnecting');
    };
    es.onmessage = (msg) => {
      let ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      apply(ev);
    };
  }

  window.coordView = {
    get cy() { return cy; },
    model: snapshotModel,
    // Call done(model) as soon as pred(model) holds (now, or after a later event): pushed.
    when(pred, done) {
      const snap = snapshotModel();
      if (pred(snap)) done(snap); else waiters.push({ pred: pred, done: done });
    },
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
