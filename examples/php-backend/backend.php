<?php
/**
 * An example Piped backend in PHP, with the amqp extension (Debian's php-cli
 * and php-amqp).
 *
 * It consumes the calls of one or more Piped nodes from queue-out-{id} and
 * answers each with its own payload, like examples/echo-backend:
 *
 *     php backend.php --nodes 1,2
 *
 *     call    {"id":1,"method":"hello","token":"T","payload":{"a":1}}
 *     result  {"type":"result","token":"T","id":1,"method":"hello","payload":{"a":1}}
 *
 * to exchange-in-{id}, with the call's correlation_id copied. Two methods
 * are special:
 *
 *     event   payload {"event": "name", "payload": {...}}: first publish
 *             {"type":"event","token":T,"event":"name","payload":{...}} to
 *             the mass exchange (every connection of the token, on every
 *             node), then answer as usual
 *     silent  never answer (the node times the call out)
 *
 * The result is written with json_encode and its default flags, as most PHP
 * backends do, so an id comes back in PHP's spelling: "a/1" as "a\/1",
 * "é-1" as "\u00e9-1", 1.50e3 as 1500. The node matches ids by value, so
 * that is fine. One thing is not: json_decode turns an integer beyond
 * PHP_INT_MAX (2^63-1) into a float, so 12345678901234567890 comes back as
 * 1.2345678901234567e+19, another number. The result still reaches its
 * caller because it carries the call's correlation_id; see README.md.
 *
 * Tracing: the call's AMQP header traceparent is continued without an SDK:
 * the result (and the event) carry a traceparent with the same trace id and
 * flags and a new span id, and the call's tracestate. See docs/tracing.md.
 *
 * Options (environment variables in brackets):
 *
 *     --amqp-url URL      [AMQP_URL, PIPED_AMQP_URL] amqp://guest:guest@localhost:5672/
 *     --nodes 1,2         [NODES] the node ids to serve
 *     --mass-exchange X   [MASS_EXCHANGE] exchange-mass
 *     --no-correlation-id do not copy correlation_id (act like a backend
 *                         written for the original Piped)
 *     --queue-out-prefix, --exchange-in-prefix  queue-out-, exchange-in-
 *
 * It stops cleanly on SIGTERM or SIGINT: the call in hand is answered, the
 * consumers are cancelled, and whatever was delivered but not answered goes
 * back to the queue for another backend.
 */

declare(strict_types=1);

const PREFETCH = 64;           // calls in hand at once
const POLL_SECONDS = 0.2;      // how often the consume loop looks at the stop flag
const CONFIRM_SECONDS = 5.0;   // how long to wait for the broker to confirm a publish
const MAX_BACKOFF_SECONDS = 10.0;

function logf(string $level, string $format, ...$args): void
{
    fwrite(STDOUT, date('Y-m-d H:i:s') . " $level php-backend: " . vsprintf($format, $args) . "\n");
}

/**
 * Whether SIGTERM or SIGINT came. The signals are blocked (see main) and
 * picked up here, between calls and after each POLL_SECONDS without one:
 * a handler run by pcntl_async_signals interrupts the extension's wait for
 * the broker, which then never returns.
 */
function stopRequested(): bool
{
    static $stopping = false;
    if (!$stopping) {
        $sig = pcntl_sigtimedwait([SIGTERM, SIGINT], $info, 0, 0);
        if (is_int($sig) && $sig > 0) {
            $stopping = true;
            logf('INFO', 'got signal %d: stopping', $sig);
        }
    }
    return $stopping;
}

function usage(string $error = ''): never
{
    if ($error !== '') {
        fwrite(STDERR, "php-backend: $error\n");
    }
    fwrite(STDERR, "usage: php backend.php [--amqp-url URL] [--nodes 1,2] [--mass-exchange NAME] [--no-correlation-id]\n"
        . "                       [--queue-out-prefix queue-out-] [--exchange-in-prefix exchange-in-]\n");
    exit($error === '' ? 0 : 2);
}

/** The arguments of AMQPConnection for an amqp:// URL. */
function credentials(string $url, string $name): array
{
    $u = parse_url($url);
    if ($u === false || ($u['scheme'] ?? '') !== 'amqp' || !isset($u['host'])) {
        usage("--amqp-url: want amqp://user:password@host:port/vhost, got an unreadable URL");
    }
    $path = $u['path'] ?? '';
    return [
        'host' => $u['host'],
        'port' => $u['port'] ?? 5672,
        'login' => rawurldecode($u['user'] ?? 'guest'),
        'password' => rawurldecode($u['pass'] ?? 'guest'),
        'vhost' => ($path === '' || $path === '/') ? '/' : rawurldecode(substr($path, 1)),
        'read_timeout' => POLL_SECONDS,
        'heartbeat' => 10,
        'connection_name' => $name,
    ];
}

/**
 * The trace headers for what a call makes us publish: the call's trace id
 * and flags with a span id of our own (the span "handling the call").
 * Returns [headers, trace id, parent span id, span id]; without a valid
 * traceparent on the call there is nothing to continue.
 */
function continueTrace(array $headers): array
{
    $tp = $headers['traceparent'] ?? null;
    if (!is_string($tp) || !preg_match('/^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/', $tp, $m)
        || $m[1] === 'ff' || ($m[1] === '00' && isset($m[5]))
        || $m[2] === str_repeat('0', 32) || $m[3] === str_repeat('0', 16)) {
        return [[], null, null, null];
    }
    do {
        $span = bin2hex(random_bytes(8));
    } while ($span === str_repeat('0', 16));
    $out = ['traceparent' => "00-{$m[2]}-$span-{$m[4]}"];
    if (is_string($headers['tracestate'] ?? null) && $headers['tracestate'] !== '') {
        $out['tracestate'] = $headers['tracestate'];
    }
    return [$out, $m[2], $m[3], $span];
}

/** The broker refused (nacked) a publish; the channel is still usable. */
final class Nacked extends RuntimeException
{
}

/** Publishing an answer failed; the session must start over. */
final class AnswerFailed extends RuntimeException
{
}

final class Backend
{
    private AMQPChannel $pub;       // publishes, in confirm mode
    private array $exchangeIn = []; // queue-out name => its node's exchange-in
    private AMQPExchange $mass;
    private bool $nacked = false;   // the broker's verdict on the last publish
    public bool $consumed = false;  // whether the current session got to consuming

    public function __construct(private array $opt, private array $nodes)
    {
    }

    /**
     * One session, on two broker connections: consume until asked to stop
     * or a connection fails. Publishing has a connection of its own: waiting
     * for the broker's confirm on the consuming one would meet the next
     * calls' deliveries ("unexpected method received").
     */
    public function session(): void
    {
        $conn = new AMQPConnection(credentials($this->opt['amqp-url'], 'piped-php-backend consume'));
        $pubConn = new AMQPConnection(credentials($this->opt['amqp-url'], 'piped-php-backend publish'));
        try {
            $conn->connect();
            $pubConn->connect();
            $sub = new AMQPChannel($conn);
            $sub->setPrefetchCount(PREFETCH);
            $this->pub = new AMQPChannel($pubConn);
            $this->pub->confirmSelect();
            // Each publish waits for its own confirm: stop waiting at the
            // first ack or nack, and remember which it was.
            $this->pub->setConfirmCallback(
                function () { $this->nacked = false; return false; },
                function () { $this->nacked = true; return false; },
            );
            $queues = $this->declare($sub);
            foreach ($queues as $node => $q) {
                $q->consume(null, AMQP_NOPARAM, "php-backend-$node"); // basic.consume only
            }
            logf('INFO', 'consuming %s', implode(', ', array_map(fn($q) => $q->getName(), $queues)));
            $this->consumed = true;
            $first = reset($queues);
            while (!stopRequested()) {
                try {
                    // Delivers the calls of every queue consumed on $sub.
                    $first->consume(function (AMQPEnvelope $d, AMQPQueue $q) {
                        $this->onCall($q, $d);
                        return !stopRequested();
                    }, AMQP_JUST_CONSUME);
                } catch (AMQPQueueException $e) {
                    if (stripos($e->getMessage(), 'timeout') === false) {
                        throw $e;
                    }
                    // No call within POLL_SECONDS: look at the stop flag.
                }
            }
            foreach ($queues as $node => $q) {
                $q->cancel("php-backend-$node"); // unacked calls go back to the queue when we close
            }
        } finally {
            foreach ([$conn, $pubConn] as $c) {
                if ($c->isConnected()) {
                    $c->disconnect();
                }
            }
        }
    }

    /**
     * Declares what we use exactly as the node does (durable, no arguments),
     * so that either may start first, and returns the queues by node id.
     */
    private function declare(AMQPChannel $ch): array
    {
        $queues = [];
        foreach ($this->nodes as $node) {
            $q = new AMQPQueue($ch);
            $q->setName($this->opt['queue-out-prefix'] . $node);
            $q->setFlags(AMQP_DURABLE);
            $q->declareQueue();
            $queues[$node] = $q;
            $this->exchangeIn[$q->getName()] = $this->exchange($this->opt['exchange-in-prefix'] . $node);
        }
        $this->mass = $this->exchange($this->opt['mass-exchange']);
        return $queues;
    }

    private function exchange(string $name): AMQPExchange
    {
        $ex = new AMQPExchange($this->pub);
        $ex->setName($name);
        $ex->setType(AMQP_EX_TYPE_FANOUT);
        $ex->setFlags(AMQP_DURABLE);
        $ex->declareExchange();
        return $ex;
    }

    private function onCall(AMQPQueue $q, AMQPEnvelope $d): void
    {
        try {
            $call = json_decode($d->getBody(), false, 512, JSON_THROW_ON_ERROR); // objects stay objects: {} is not []
        } catch (JsonException) {
            $call = null;
        }
        if (!($call instanceof stdClass) || !is_string($call->method ?? null) || !is_string($call->token ?? null)) {
            // Never requeue what cannot be read: it would come back forever.
            logf('WARN', 'dropping a message that is not a call (queue %s, %d bytes)', $q->getName(), strlen($d->getBody()));
            $q->ack($d->getDeliveryTag());
            return;
        }
        [$headers, $traceId, $parent, $span] = continueTrace($d->getHeaders());
        // The log names the trace, never the token.
        logf('INFO', 'call queue=%s method=%s correlation_id=%s trace_id=%s parent_span=%s span=%s',
            $q->getName(), $call->method, $d->getCorrelationId(), $traceId ?? '-', $parent ?? '-', $span ?? '-');

        if ($call->method === 'silent') {
            $q->ack($d->getDeliveryTag());
            return;
        }
        try {
            $this->answer($q, $d, $call, $headers);
        } catch (Nacked) {
            logf('WARN', 'the broker refused (nacked) an answer; the call goes back to the queue');
            $q->nack($d->getDeliveryTag(), AMQP_REQUEUE);
            return;
        } catch (AMQPException $e) {
            // Most likely the publishing channel is gone (an exchange that
            // was deleted closes it): start a new session, declaring again.
            // The call, unacked, goes back to the queue when we disconnect.
            throw new AnswerFailed('publishing an answer: ' . $e->getMessage(), 0, $e);
        }
        $q->ack($d->getDeliveryTag()); // after the broker confirmed the answer
    }

    /** Publishes the answer to $call (and, for method "event", the event first). */
    private function answer(AMQPQueue $q, AMQPEnvelope $d, stdClass $call, array $headers): void
    {
        if ($call->method === 'event') {
            $p = $call->payload ?? null;
            if ($p instanceof stdClass && is_string($p->event ?? null) && $p->event !== '') {
                $event = ['type' => 'event', 'token' => $call->token, 'event' => $p->event];
                if (property_exists($p, 'payload')) {
                    $event['payload'] = $p->payload;
                }
                $this->publish($this->mass, json_encode($event), ['headers' => $headers]);
            } else {
                logf('WARN', 'event call without payload.event: answering without publishing');
            }
        }

        $result = ['type' => 'result', 'token' => $call->token];
        if (isset($call->id)) { // no id in the call (or null): none in the result
            $result['id'] = $call->id;
        }
        $result['method'] = $call->method;
        if (property_exists($call, 'payload')) {
            $result['payload'] = $call->payload;
        }
        $attrs = ['headers' => $headers];
        if (!$this->opt['no-correlation-id'] && $d->getCorrelationId() !== '') {
            $attrs['correlation_id'] = $d->getCorrelationId();
        }
        $this->publish($this->exchangeIn[$q->getName()], json_encode($result), $attrs);
    }

    /** Publishes and waits for the broker's confirm (throws on a nack or a timeout). */
    private function publish(AMQPExchange $ex, string $body, array $attrs): void
    {
        $ex->publish($body, '', AMQP_NOPARAM, ['content_type' => 'application/json'] + $attrs);
        $this->pub->waitForConfirm(CONFIRM_SECONDS);
        if ($this->nacked) {
            throw new Nacked();
        }
    }
}

function main(array $argv): int
{
    $long = ['amqp-url:', 'nodes:', 'mass-exchange:', 'no-correlation-id', 'queue-out-prefix:', 'exchange-in-prefix:', 'help'];
    $rest = 0;
    $o = getopt('h', $long, $rest);
    if (isset($o['h']) || isset($o['help'])) {
        usage();
    }
    if ($rest < count($argv)) {
        usage("unexpected argument " . $argv[$rest]);
    }
    $env = fn(string $k) => (getenv($k) === false || getenv($k) === '') ? null : getenv($k);
    $opt = [
        'amqp-url' => $o['amqp-url'] ?? $env('AMQP_URL') ?? $env('PIPED_AMQP_URL') ?? 'amqp://guest:guest@localhost:5672/',
        'mass-exchange' => $o['mass-exchange'] ?? $env('MASS_EXCHANGE') ?? 'exchange-mass',
        'no-correlation-id' => isset($o['no-correlation-id']),
        'queue-out-prefix' => $o['queue-out-prefix'] ?? 'queue-out-',
        'exchange-in-prefix' => $o['exchange-in-prefix'] ?? 'exchange-in-',
    ];
    foreach ($opt as $k => $v) {
        if (is_array($v)) {
            usage("--$k given twice");
        }
    }
    $nodes = array_values(array_filter(array_map('trim', explode(',', (string)($o['nodes'] ?? $env('NODES') ?? '1'))), 'strlen'));
    if ($nodes === [] || count(array_unique($nodes)) !== count($nodes)) {
        usage('--nodes: empty or repeated node ids');
    }

    pcntl_sigprocmask(SIG_BLOCK, [SIGTERM, SIGINT]); // see stopRequested

    $backend = new Backend($opt, $nodes);
    $backoff = 0.1;
    while (!stopRequested()) {
        $backend->consumed = false;
        try {
            $backend->session();
            break;
        } catch (AMQPException | AnswerFailed $e) {
            // A lost connection, a channel the broker closed, or a failed
            // declaration (logged each time; see the node's docs/protocol.md
            // on conflicts): start over, as the node does.
            if ($backend->consumed) {
                $backoff = 0.1; // it worked for a while: start the backoff again
            }
            logf('WARN', 'broker session ended (%s: %s); reconnecting in %.1fs', get_class($e), $e->getMessage(), $backoff);
        }
        $until = microtime(true) + $backoff;
        while (!stopRequested() && microtime(true) < $until) {
            usleep((int)(min(POLL_SECONDS, $backoff) * 1e6));
        }
        $backoff = min($backoff * 2, MAX_BACKOFF_SECONDS);
    }
    logf('INFO', 'stopped');
    return 0;
}

exit(main($argv));
