// pkr operator console: plain JS, no dependencies. Every value from the server is inserted as text.
'use strict';

(() => {
  const TOKEN_KEY = 'pkr-operator-token';
  const REFRESH_MS = 5000;
  const USER_ID = /^[A-Za-z0-9-]{1,64}$/; // the server's rule for a customer id
  const $ = (id) => document.getElementById(id);

  const errors = new Map(); // source -> message; each loader sets or clears its own entry
  let csrfToken = null;
  let selectedDelivery = null;
  let refreshing = false;
  let again = false; // a refresh was asked for while one was running
  let locked = false; // an operator endpoint answered 401 and no token is set
  let timer = null;
  let selectedCustomer = null; // the user_id looked up, or null for the demo customer
  let lookupFailed = null; // {id, message} when the looked-up customer does not exist: it is not asked again
  // Whether this gateway has a demo customer: null until known, false once /api/me answered 409 demo_not_seeded.
  // Outside demo mode (the page is locked or holds a token) /api/me is not asked at all: it could only answer 409.
  let demoCustomer = null;
  const createdCustomers = new Map(); // user_id -> the customer as POST /api/users answered (email, account, …)

  // ---- small helpers ------------------------------------------------------------------------------

  function el(tag, opts = {}, ...children) {
    const node = document.createElement(tag);
    if (opts.id) node.id = opts.id;
    if (opts.cls) node.className = opts.cls;
    if (opts.title) node.title = opts.title;
    if (opts.data) Object.assign(node.dataset, opts.data);
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function storage(action, value) {
    try {
      if (action === 'get') return sessionStorage.getItem(TOKEN_KEY);
      if (action === 'set') sessionStorage.setItem(TOKEN_KEY, value);
      if (action === 'clear') sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled: the token lives for this page only */ }
    return null;
  }

  // Integer token units (a decimal string, 6 decimals) as PKR, exactly: string slicing, no floats.
  function pkr(units) {
    const text = String(units ?? '');
    const m = /^(-?)(\d+)$/.exec(text);
    if (!m) return text || '—';
    const digits = m[2].replace(/^0+(?=\d)/, '').padStart(7, '0');
    const whole = digits.slice(0, -6).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    const frac = digits.slice(-6).replace(/0{1,4}$/, '');
    return `${m[1]}${whole}.${frac} PKR`;
  }

  // A decimal PKR string as the server gives it ("1234.56"), with thousands separators; not a number either way.
  function pkrText(amount) {
    const m = /^(-?)(\d+)(\.\d+)?$/.exec(String(amount ?? ''));
    return m ? `${m[1]}${m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ',')}${m[3] ?? ''} PKR` : amount;
  }

  function when(text) {
    if (!text) return '—';
    return el('span', { title: text }, String(text).replace('T', ' ').replace(/\.\d+/, '').replace(/Z$/, ''));
  }

  function shortId(text) {
    if (text === null || text === undefined || text === '') return '—';
    const s = String(text);
    return s.length <= 16 ? el('span', { cls: 'mono' }, s) : el('span', { cls: 'mono', title: s }, `${s.slice(0, 8)}…${s.slice(-6)}`);
  }

  function badge(text, good) {
    const kind = good === true ? 'ok' : good === false ? 'bad' : 'neutral';
    return el('span', { cls: `badge ${kind}` }, text ?? '—');
  }

  const stateGood = { delivered: true, dead: false, pending: null };
  const goodOutcomes = new Set(['minted', 'duplicate', 'recorded']);

  function table(container, columns, rows, empty, rowOpts) {
    if (!Array.isArray(rows) || rows.length === 0) {
      container.replaceChildren(el('p', { cls: 'empty' }, empty));
      return;
    }
    const head = el('tr', {}, ...columns.map((c) => el('th', { cls: c.cls }, c.label)));
    const body = rows.map((row) => {
      const tr = el('tr', rowOpts ? rowOpts(row) : {}, ...columns.map((c) => {
        const value = c.get(row);
        const missing = value === null || value === undefined || value === '';
        return el('td', { cls: c.cls }, missing ? (c.blank ? '' : '—') : value);
      }));
      return tr;
    });
    container.replaceChildren(el('table', {}, el('thead', {}, head), el('tbody', {}, ...body)));
  }

  function facts(pairs) {
    return el('dl', { cls: 'facts' }, ...pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v ?? '—')]));
  }

  // ---- HTTP ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, detail) {
      super(`${code}${detail ? `: ${detail}` : ''}`);
      this.status = status;
      this.code = code;
    }
  }

  // Answers {status, json}; an HTTP error or a network failure throws an ApiError.
  async function send(path, method = 'GET', body) {
    const headers = { Accept: 'application/json' };
    const token = storage('get');
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && !token) headers['X-CSRFToken'] = await csrf();
    let response;
    try {
      response = await fetch(path, {
        method, headers, credentials: 'same-origin', cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, 'network_error', 'the gateway did not answer');
    }
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    if (!response.ok) {
      const code = json && typeof json.error === 'string' ? json.error : `HTTP ${response.status}`;
      const detail = json && typeof json.detail === 'string' ? json.detail : '';
      throw new ApiError(response.status, code, detail);
    }
    return { status: response.status, json };
  }

  async function request(path, method = 'GET', body) {
    return (await send(path, method, body)).json;
  }

  async function csrf() {
    if (!csrfToken) csrfToken = (await request('/api/csrf')).csrftoken;
    return csrfToken;
  }

  // A POST with the CSRF header (none needed with the operator token); answers {status, json}.
  async function post(path, body) {
    try {
      return await send(path, 'POST', body);
    } catch (e) {
      if (e.code !== 'csrf_failed' || storage('get')) throw e;
      csrfToken = null; // the cookie changed or expired: fetch a fresh one and try once more
      return send(path, 'POST', body);
    }
  }

  // Outside demo mode: the page was refused (401) or holds the operator token.
  function tokenMode() {
    return locked || Boolean(storage('get'));
  }

  // ---- messages and auth --------------------------------------------------------------------------

  function showErrors() {
    const box = $('errors');
    const bySameMessage = new Map(); // one line per message: a gateway that is down fails every section alike
    for (const [source, message] of errors) bySameMessage.set(message, [...(bySameMessage.get(message) || []), source]);
    box.replaceChildren(...[...bySameMessage].map(([message, sources]) => el('div', {}, el('strong', {}, sources.join(', ')), ` ${message}`)));
    box.hidden = errors.size === 0;
  }

  let noticeTimer = null;
  function notice(text) {
    const box = $('notice');
    box.textContent = text;
    box.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
  }

  // Runs one loader; records its error (or clears it). Returns true when the loader needed a token.
  async function load(source, fn) {
    try {
      await fn();
      errors.delete(source);
      return false;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        errors.delete(source);
        return true;
      }
      errors.set(source, e instanceof ApiError ? e.message : 'unexpected error in the console');
      return false;
    }
  }

  // ---- sections -----------------------------------------------------------------------------------

  async function loadStore() {
    const pill = $('store');
    try {
      await request('/api/health');
      pill.textContent = 'store ok';
      pill.className = 'pill ok';
    } catch (e) {
      pill.textContent = 'store unavailable';
      pill.className = 'pill bad';
      throw e;
    }
  }

  async function loadSummary() {
    const s = await request('/api/debug/summary');
    const inv = s.invariants || {};
    const flight = inv.in_flight || {};
    const jobs = s.chain_jobs || {};
    const bal = s.balances || {};
    const conv = s.convergence || {};
    const lag = conv.lag_ms || {};
    const lagText = ['p50', 'p90', 'p99', 'max'].map((k) => `${k} ${lag[k] ?? '—'}`).join(' · ');
    const reserveMatches = inv.reserve_units === inv.supply_units;
    const checks = Array.isArray(inv.checks) ? inv.checks : [];
    $('health').replaceChildren(
      el('div', { cls: 'tiles' },
        el('div', { cls: 'tile' }, el('div', { cls: 'label' }, 'invariants'), badge(inv.ok ? 'all hold' : 'FAILING', Boolean(inv.ok)),
          el('div', { cls: 'muted' }, `${checks.filter((c) => c.ok).length} of ${checks.length} checks pass`)),
        el('div', { cls: 'tile' }, el('div', { cls: 'label' }, 'reserve'), el('div', { cls: 'amount' }, pkr(inv.reserve_units))),
        el('div', { cls: 'tile' }, el('div', { cls: 'label' }, 'supply'), el('div', { cls: 'amount' }, pkr(inv.supply_units)),
          badge(reserveMatches ? 'reserve = supply' : 'reserve ≠ supply', reserveMatches))),
      el('div', { cls: 'columns' },
        facts([
          ['minted', pkr(jobs.mints_units)], ['burned', pkr(jobs.burns_units)], ['net', pkr(jobs.net_units)],
          ['token balance', pkr(bal.token_balance_units)], ['chain stub', pkr(bal.chain_stub_units)],
          ['balances match', badge(bal.match ? 'yes' : 'no', Boolean(bal.match))],
        ]),
        facts([
          ['payouts requested', pkr(flight.payouts_requested_units)], ['burns awaiting debit', flight.burns_awaiting_debit],
          ['held credits', pkr(flight.held_credit_units)],
          ['unbound credits', unboundCredits(flight.unbound_credit_units)],
          ['arrivals', `webhook only ${conv.webhook_only ?? '—'} · poll only ${conv.poll_only ?? '—'} · both ${conv.both ?? '—'}`],
          ['lag (ms)', lagText],
          ['found by poll first', (conv.found_by_poll_first || []).length ? el('span', { cls: 'mono' }, conv.found_by_poll_first.join(', ')) : 'none'],
        ])));
    $('checks').replaceChildren(...checks.map((c) => el('li', { cls: c.ok ? 'ok' : 'bad' },
      el('span', {}, badge(c.ok ? 'ok' : 'FAIL', Boolean(c.ok))), el('span', { cls: 'mono name' }, c.name), el('span', { cls: 'check-detail' }, c.detail))));
  }

  // Credits recorded on accounts no customer is bound to: in the reserve, not minted until an operator binds them.
  function unboundCredits(units) {
    const amount = el('span', { id: 'unbound-credits' }, pkr(units));
    if (units === undefined || units === null || /^0*$/.test(String(units))) return amount;
    return el('span', {}, amount, ' ', el('span', { cls: 'badge warn', title: 'deposits on accounts no customer is bound to: create the customer, then mint them' }, 'awaiting a customer'));
  }

  function customerMessage(scope, text) {
    $('customer-scope').textContent = scope;
    $('customer').replaceChildren(el('p', { cls: 'empty' }, text));
  }

  // The balance of a customer and what is known of it: the demo customer's /api/me, or what POST /api/users
  // answered in this page; a customer only looked up is shown by its id.
  function renderCustomer(customer, balance) {
    const known = [
      ['name', customer.display_name], ['email', customer.email],
      ['user', el('span', { id: 'customer-user-id', cls: 'mono selectable' }, customer.user_id)],
      ['wallet', customer.wallet_account ? el('span', { cls: 'mono' }, customer.wallet_account) : undefined],
      ['chain address', customer.chain_address ? shortId(customer.chain_address) : undefined],
    ].filter(([, value]) => value !== undefined);
    $('customer').replaceChildren(
      el('div', { cls: 'balance' }, el('div', { cls: 'label' }, 'token balance'),
        el('div', { id: 'balance', cls: 'amount big' }, pkr(balance.token_balance_units)),
        el('div', { cls: 'muted mono' }, `${balance.token_balance_units} units · ${balance.token_decimals} decimals`)),
      facts(known));
  }

  async function loadCustomer() {
    const id = selectedCustomer;
    if (id !== null) {
      await loadLookedUpCustomer(id);
      return;
    }
    // No customer named: the demo customer's, in demo mode only. Outside it nothing is asked every 5 s.
    if (tokenMode() || demoCustomer === false) {
      customerMessage('', demoCustomer === false && !tokenMode()
        ? 'No demo customer here: enter a customer id.'
        : 'Enter a customer id to see its balance and ledger.');
      return;
    }
    let me;
    try {
      me = await request('/api/me');
    } catch (e) {
      if (e.code !== 'demo_not_seeded') throw e;
      demoCustomer = false; // asked once: every later ask would be the same 409
      customerMessage('', 'No demo customer here: enter a customer id.');
      return;
    }
    const balance = await request('/api/balance');
    demoCustomer = true;
    if (selectedCustomer !== id) return; // another customer was chosen meanwhile
    $('customer-scope').textContent = 'demo customer';
    renderCustomer(me, balance);
  }

  async function loadLookedUpCustomer(id) {
    if (lookupFailed && lookupFailed.id === id) {
      customerMessage('', lookupFailed.message);
      return;
    }
    if (locked && !storage('get')) {
      customerMessage('', 'Needs the operator token.');
      return;
    }
    let balance;
    try {
      balance = await request(`/api/balance?user_id=${encodeURIComponent(id)}`);
    } catch (e) {
      if (selectedCustomer !== id) return;
      if (e.code === 'unknown_customer' || e.code === 'invalid_field') {
        lookupFailed = { id, message: `No customer ${id}.` };
        errors.set('lookup', e.message);
        customerMessage('', lookupFailed.message);
        return;
      }
      if (e.status === 401) customerMessage('', 'Needs the operator token.');
      throw e;
    }
    if (selectedCustomer !== id) return;
    $('customer-scope').textContent = 'looked up';
    renderCustomer({ ...(createdCustomers.get(id) || {}), user_id: id }, balance);
  }

  // Shows the customer with this id (null: the demo customer) in the Customer and Ledger sections.
  function selectCustomer(id) {
    errors.delete('lookup');
    if (id !== null && !USER_ID.test(id)) {
      errors.set('lookup', 'invalid_field: a customer id is 1 to 64 characters of A-Z a-z 0-9 -');
      showErrors();
      return;
    }
    if (id !== selectedCustomer || lookupFailed) {
      selectedCustomer = id;
      lookupFailed = null;
      customerMessage('', 'Loading…');
      $('ledger').replaceChildren(el('p', { cls: 'empty' }, 'Loading…'));
    }
    refresh();
  }

  async function createCustomer() {
    const button = $('new-customer-create');
    const body = { email: $('new-customer-email').value.trim(), wallet_account: $('new-customer-account').value.trim() };
    const name = $('new-customer-name').value.trim();
    if (name) body.display_name = name;
    button.disabled = true;
    errors.delete('new customer');
    try {
      const { status, json: customer } = await post('/api/users', body);
      createdCustomers.set(customer.user_id, customer);
      showCreated(customer, status === 201);
      $('new-customer-form').reset();
      notice(status === 201
        ? `Customer ${customer.email} created on ${customer.wallet_account}.`
        : `${customer.email} was already bound to ${customer.wallet_account}: the same customer.`);
      $('customer-id').value = customer.user_id;
      selectCustomer(customer.user_id);
    } catch (e) {
      errors.set('new customer', e instanceof ApiError ? e.message : 'unexpected error in the console');
      showErrors();
    } finally {
      button.disabled = false;
    }
  }

  function showCreated(customer, created) {
    const id = el('code', { id: 'new-customer-id', cls: 'mono selectable', title: 'the new customer\'s user_id' }, customer.user_id);
    const copy = el('button', { cls: 'link' }, 'copy');
    copy.type = 'button';
    copy.addEventListener('click', () => {
      const selectIt = () => {
        window.getSelection().selectAllChildren(id);
        notice('The user_id is selected: copy it with Ctrl+C.');
      };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(customer.user_id).then(() => notice('user_id copied.'), selectIt);
      } else {
        selectIt();
      }
    });
    $('new-customer-result').replaceChildren(el('div', { cls: 'created' },
      el('div', {}, badge(created ? 'created' : 'already bound', true), ' ', customer.display_name, ' ',
        el('span', { cls: 'muted' }, customer.email), ' · ', el('span', { cls: 'mono' }, customer.wallet_account)),
      el('div', { cls: 'created-id' }, el('span', { cls: 'label' }, 'user_id'), id, copy)));
  }

  async function loadDeliveries() {
    const state = $('delivery-state').value;
    const rows = await request(`/api/webhooks/deliveries?limit=50${state ? `&state=${encodeURIComponent(state)}` : ''}`);
    table($('deliveries'), [
      { label: 'id', cls: 'num', get: (d) => d.id },
      { label: 'provider tx', cls: 'mono', get: (d) => d.provider_tx_id },
      { label: 'state', get: (d) => badge(d.state, stateGood[d.state]) },
      { label: 'attempts', cls: 'num', get: (d) => d.attempts },
      { label: 'last status', cls: 'num', get: (d) => d.last_http_status },
      { label: 'last error', get: (d) => d.last_error },
      { label: 'next attempt', get: (d) => (d.next_attempt_at ? when(d.next_attempt_at) : null) },
      { label: 'created', get: (d) => when(d.created_at) },
      { label: 'delivered', get: (d) => (d.delivered_at ? when(d.delivered_at) : null) },
      { label: '', blank: true, get: (d) => (d.state === 'dead' ? redeliverButton(d.id) : null) },
    ], rows, state ? `No ${state} deliveries.` : 'No deliveries yet.', (d) => ({
      cls: `clickable${d.id === selectedDelivery ? ' selected' : ''}`, data: { deliveryId: String(d.id) },
    }));
    if (selectedDelivery !== null) await loadDeliveryDetail(selectedDelivery);
  }

  function redeliverButton(id) {
    const button = el('button', { cls: 'redeliver', data: { id: String(id) } }, 'Redeliver');
    button.type = 'button';
    return button;
  }

  async function loadDeliveryDetail(id) {
    const box = $('delivery-detail');
    const detail = await request(`/api/webhooks/deliveries/${encodeURIComponent(id)}`);
    const d = detail.delivery || {};
    const title = el('h3', {}, `Delivery ${d.id} `, el('span', { cls: 'mono' }, d.message_id ?? ''), ' ', badge(d.state, stateGood[d.state]));
    const attempts = el('div');
    table(attempts, [
      { label: '#', cls: 'num', get: (a) => a.attempt_no },
      { label: 'at', get: (a) => when(a.attempted_at) },
      { label: 'HTTP', cls: 'num', get: (a) => (a.http_status ? badge(String(a.http_status), a.http_status < 300) : null) },
      { label: 'error', get: (a) => a.error },
      { label: 'duration (ms)', cls: 'num', get: (a) => a.duration_ms },
    ], detail.attempts, 'No attempts yet.');
    const close = el('button', { cls: 'link' }, 'close');
    close.type = 'button';
    close.addEventListener('click', () => { selectedDelivery = null; box.hidden = true; markSelected(); });
    box.replaceChildren(el('div', { cls: 'detail-head' }, title, close), attempts);
    box.hidden = false;
  }

  function markSelected() {
    for (const tr of $('deliveries').querySelectorAll('tr[data-delivery-id]')) {
      tr.classList.toggle('selected', tr.dataset.deliveryId === String(selectedDelivery));
    }
  }

  async function redeliver(id, button) {
    button.disabled = true;
    button.textContent = 'Queued…';
    await load('redeliver', async () => {
      await post(`/api/webhooks/deliveries/${encodeURIComponent(id)}/retry`);
      notice(`Delivery ${id} queued for redelivery.`);
    });
    showErrors();
    await refresh();
  }

  async function loadInbound() {
    const rows = await request('/api/webhooks/inbound?limit=50');
    table($('inbound'), [
      { label: 'id', cls: 'num', get: (r) => r.id },
      { label: 'received', get: (r) => when(r.received_at) },
      { label: 'provider tx', cls: 'mono', get: (r) => r.provider_tx_id },
      { label: 'message', get: (r) => shortId(r.message_id) },
      { label: 'scheme', get: (r) => r.scheme },
      { label: 'verification', get: (r) => badge(r.verification, r.verification === 'verified' ? true : r.verification === 'unverified' ? null : false) },
      { label: 'outcome', get: (r) => badge(r.outcome, goodOutcomes.has(r.outcome) ? true : r.error || r.outcome === 'conflict' ? false : null) },
      { label: 'error', get: (r) => r.error },
      { label: 'job', get: (r) => shortId(r.job_id) },
      { label: 'bytes', cls: 'num', get: (r) => r.body_bytes },
      { label: 'source', cls: 'mono', get: (r) => r.source_address },
    ], rows, 'No webhooks received yet.');
  }

  async function loadQuarantine() {
    const rows = await request('/api/webhooks/quarantine?limit=50');
    const box = $('quarantine');
    if (!Array.isArray(rows) || rows.length === 0) {
      box.replaceChildren(el('p', { cls: 'empty' }, 'Nothing quarantined.'));
      return;
    }
    box.replaceChildren(el('ul', { cls: 'quarantine' }, ...rows.map((q) => el('li', {},
      el('div', {}, badge('conflict', false), ' ', el('span', { cls: 'mono' }, q.provider_tx_id), ' ',
        el('span', { cls: 'muted' }, `#${q.id} via ${q.arrived_via ?? '—'}`)),
      el('div', {}, 'differs in ', el('span', { cls: 'mono' }, (q.differing_fields || []).join(', ') || '—'),
        el('span', { cls: 'muted' }, ' · '), when(q.created_at)),
      el('details', {}, el('summary', {}, 'body'), el('pre', { cls: 'body' }, q.body ?? ''))))));
  }

  async function loadLedger() {
    const id = selectedCustomer;
    const scope = $('ledger-scope');
    scope.replaceChildren(id === null ? 'all customers' : 'customer ', id === null ? '' : el('span', { cls: 'mono' }, id));
    if (id !== null && ((lookupFailed && lookupFailed.id === id) || (locked && !storage('get')))) {
      $('ledger').replaceChildren(el('p', { cls: 'empty' }, locked ? 'Needs the operator token.' : 'No such customer.'));
      return;
    }
    let rows;
    try {
      rows = await request(`/api/ledger?limit=50${id === null ? '' : `&user_id=${encodeURIComponent(id)}`}`);
    } catch (e) {
      if (e.status === 401 && selectedCustomer === id) $('ledger').replaceChildren(el('p', { cls: 'empty' }, 'Needs the operator token.'));
      throw e;
    }
    if (selectedCustomer !== id) return;
    table($('ledger'), [
      { label: 'id', cls: 'num', get: (e) => e.id },
      { label: 'created', get: (e) => when(e.created_at) },
      { label: 'user', get: (e) => shortId(e.user_id) },
      { label: 'side', get: (e) => e.side },
      { label: 'account', cls: 'mono', get: (e) => e.account },
      { label: 'amount', cls: 'num mono', get: (e) => pkr(e.amount_units) },
      { label: 'units', cls: 'num mono', get: (e) => e.amount_units },
      { label: 'ref', get: (e) => e.ref_type },
      { label: 'ref id', get: (e) => shortId(e.ref_id) },
    ], rows, id === null ? 'The ledger is empty.' : 'No ledger entries for this customer yet.');
  }

  const flagNotes = {
    unbound_account: ['warn', 'recorded, not minted: no customer is bound to this account; create the customer, then mint it'],
    above_mint_limit: ['warn', 'held for an operator: above the mint limit'],
    unmatched_debit: ['bad', 'a debit that matches no burn'],
    failed_payout: ['bad', 'the provider failed this payout'],
  };

  function flagBadge(flag) {
    if (!flag) return null;
    const [kind, note] = flagNotes[flag] || ['bad', flag];
    return el('span', { cls: `badge ${kind}`, title: note, data: { flag: String(flag) } }, String(flag).replace(/_/g, ' '));
  }

  async function loadTransactions() {
    const rows = await request('/api/external-transactions?limit=50');
    table($('transactions'), [
      { label: 'provider tx', cls: 'mono', get: (t) => t.provider_tx_id },
      { label: 'account', cls: 'mono', get: (t) => t.account },
      { label: 'direction', get: (t) => t.direction },
      { label: 'amount', cls: 'num mono', get: (t) => pkrText(t.amount_pkr) },
      { label: 'status', get: (t) => t.status },
      { label: 'flag', blank: true, get: (t) => flagBadge(t.flag) },
      { label: 'via', get: (t) => t.arrived_via },
      { label: 'memo', get: (t) => t.memo },
      { label: 'occurred', get: (t) => when(t.occurred_at) },
      { label: 'recorded', get: (t) => when(t.recorded_at) },
    ], rows, 'No provider transactions recorded yet.');
  }

  // ---- refresh loop and events --------------------------------------------------------------------

  // Operator endpoints need the token outside demo mode; once one answers 401 they are not polled again until a
  // token is entered, and their sections are emptied (no stale figures next to a token form).
  const operatorSections = [
    ['summary', () => loadSummary(), ['health', 'checks']], ['deliveries', () => loadDeliveries(), ['deliveries']],
    ['inbound', () => loadInbound(), ['inbound']], ['quarantine', () => loadQuarantine(), ['quarantine']],
  ];
  const openSections = [['health', () => loadStore()], ['transactions', () => loadTransactions()]];

  function lock() {
    locked = true;
    for (const [, , ids] of operatorSections) {
      for (const id of ids) $(id).replaceChildren(el(id === 'checks' ? 'li' : 'p', { cls: 'empty' }, 'Needs the operator token.'));
    }
    selectedDelivery = null;
    $('delivery-detail').hidden = true;
  }

  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    again = false;
    try {
      const token = storage('get');
      const operator = !locked || Boolean(token);
      const results = await Promise.all([
        ...openSections.map(([source, fn]) => load(source, fn)),
        ...(operator ? operatorSections.map(([source, fn]) => load(source, fn)) : []),
      ]);
      // The customer sections come after: what they ask depends on whether the page is locked (outside demo mode
      // no demo customer is asked for), and the ledger on whether the looked-up customer exists.
      if (results.some(Boolean)) lock();
      results.push(await load('customer', () => loadCustomer()));
      results.push(await load('ledger', () => loadLedger()));
      if (results.some(Boolean)) {
        lock();
        if (token) {
          storage('clear');
          errors.set('auth', 'the operator token was refused');
        }
      } else if (operator) {
        locked = false;
        errors.delete('auth');
      }
      $('token-form').hidden = !(locked && !storage('get'));
      $('forget-token').hidden = !storage('get');
      $('customer-demo').hidden = !(demoCustomer === true && !tokenMode());
      $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
      showErrors();
    } finally {
      refreshing = false;
    }
    if (again) await refresh();
  }

  function schedule() {
    clearInterval(timer);
    timer = $('auto-refresh').checked ? setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS) : null;
  }

  function start() {
    $('refresh').addEventListener('click', () => {
      for (const source of ['redeliver', 'delivery', 'new customer']) errors.delete(source);
      refresh();
    });
    $('customer-form').addEventListener('submit', (event) => {
      event.preventDefault();
      selectCustomer($('customer-id').value.trim() || null);
    });
    $('customer-demo').addEventListener('click', () => {
      $('customer-id').value = '';
      selectCustomer(null);
    });
    $('new-customer-form').addEventListener('submit', (event) => {
      event.preventDefault();
      createCustomer();
    });
    $('auto-refresh').addEventListener('change', schedule);
    $('delivery-state').addEventListener('change', () => { selectedDelivery = null; $('delivery-detail').hidden = true; refresh(); });
    $('deliveries').addEventListener('click', (event) => {
      const button = event.target.closest('button.redeliver');
      if (button) {
        redeliver(button.dataset.id, button);
        return;
      }
      const row = event.target.closest('tr[data-delivery-id]');
      if (!row) return;
      selectedDelivery = Number(row.dataset.deliveryId);
      markSelected();
      load('delivery', () => loadDeliveryDetail(selectedDelivery)).then(showErrors);
    });
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const input = $('token-input');
      storage('set', input.value.trim());
      input.value = '';
      errors.delete('auth');
      refresh();
    });
    $('forget-token').addEventListener('click', () => {
      storage('clear');
      csrfToken = null;
      selectedCustomer = null; // the operator's lookups go with the token
      lookupFailed = null;
      errors.delete('lookup');
      errors.delete('new customer');
      $('customer-id').value = '';
      $('new-customer-result').replaceChildren();
      notice('Operator token forgotten.');
      refresh();
    });
    refresh();
    schedule();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
