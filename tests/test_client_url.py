"""Unit tests for pybrokerd.client.url (pure Python, no broker)."""

import itertools
import random

import pytest

from pybrokerd.client.url import (
    BrokerURL, Endpoint, FailoverOptions, URLError, attempt_limit, parse_url,
    reconnect_delays,
)


def delays_ms(options, n, rng=random):
    return [round(d * 1000, 6) for d in itertools.islice(reconnect_delays(options, rng), n)]


# ---------------------------------------------------------------- single URLs

@pytest.mark.parametrize("text, endpoint", [
    ("tcp://host:61613", Endpoint("tcp", "host", 61613)),
    ("stomp://host:1234", Endpoint("tcp", "host", 1234)),
    ("stomp+nio://host:1234", Endpoint("tcp", "host", 1234)),
    ("ssl://host:61615", Endpoint("ssl", "host", 61615)),
    ("stomp+ssl://host:61614", Endpoint("ssl", "host", 61614)),
    ("tcp://host", Endpoint("tcp", "host", 61613)),
    ("stomp://host", Endpoint("tcp", "host", 61613)),
    ("stomp+nio://host", Endpoint("tcp", "host", 61613)),
    ("ssl://host", Endpoint("ssl", "host", 61614)),
    ("stomp+ssl://host", Endpoint("ssl", "host", 61614)),
    ("TCP://Host.Example.com:1/", Endpoint("tcp", "Host.Example.com", 1)),
    ("tcp://127.0.0.1:65535", Endpoint("tcp", "127.0.0.1", 65535)),
    ("tcp://[::1]:61613", Endpoint("tcp", "::1", 61613)),
    ("ssl://[::1]", Endpoint("ssl", "::1", 61614)),
    ("tcp://[fe80::1%eth0]:5", Endpoint("tcp", "fe80::1%eth0", 5)),
    ("  tcp://host  ", Endpoint("tcp", "host", 61613)),
])
def test_single(text, endpoint):
    url = parse_url(text)
    assert url == BrokerURL((endpoint,), False, FailoverOptions())
    assert not url.failover


@pytest.mark.parametrize("text", [
    "", "   ", "host:61613", "tcp://", "tcp://:61613", "tcp:///", "tcp://host:",
    "tcp://host:abc", "tcp://host:0", "tcp://host:65536", "tcp://host:-1",
    "tcp://host:99999999", "tcp://host:+80", "tcp://host:61613/path",
    "tcp://user@host", "tcp://ho st", "tcp://-host", "tcp://host#frag",
    "http://host:80", "amqp://host", "udp://host", "tcp:/host",
    "tcp://::1:61613", "tcp://[::1", "tcp://[nonsense]:1", "tcp://[::1]x",
    "tcp://[]:61613", "tcp://a,tcp://b", "(tcp://a)",
])
def test_bad_single(text):
    with pytest.raises(URLError):
        parse_url(text)


def test_unknown_scheme_message():
    with pytest.raises(URLError, match="unknown scheme 'http'.*stomp\\+ssl"):
        parse_url("http://host")


def test_options_on_plain_url_are_an_error():
    for text in ("tcp://host:61613?randomize=false", "tcp://host?x=y", "ssl://h?"):
        with pytest.raises(URLError, match="options are not allowed"):
            parse_url(text)


def test_urlerror_is_valueerror():
    assert issubclass(URLError, ValueError)
    with pytest.raises(ValueError):
        parse_url("nope")
    with pytest.raises(URLError):
        parse_url(None)


def test_frozen():
    url = parse_url("tcp://h")
    with pytest.raises(Exception):
        url.failover = True
    with pytest.raises(Exception):
        url.options.timeout = 5
    with pytest.raises(Exception):
        url.endpoints[0].port = 1


# ---------------------------------------------------------------- failover

A = Endpoint("tcp", "a", 61613)
B = Endpoint("tcp", "b", 61613)


@pytest.mark.parametrize("text", [
    "failover:(tcp://a:61613,tcp://b:61613)",
    "failover:(tcp://a, tcp://b:61613)",
    "failover:( tcp://a:61613 , tcp://b )?",
    "failover://(tcp://a:61613,tcp://b:61613)",
    "FAILOVER:(stomp://a,stomp+nio://b)",
    "failover:tcp://a:61613,tcp://b:61613",
    "failover:tcp://a,tcp://b",
    "failover://tcp://a,tcp://b",
])
def test_failover_forms(text):
    assert parse_url(text) == BrokerURL((A, B), True, FailoverOptions())


def test_failover_single_and_mixed():
    url = parse_url("failover:(ssl://[::1],tcp://a:1,stomp+ssl://c)")
    assert url.endpoints == (Endpoint("ssl", "::1", 61614), Endpoint("tcp", "a", 1),
                             Endpoint("ssl", "c", 61614))
    assert parse_url("failover:tcp://a").endpoints == (A,)
    assert parse_url("failover:(tcp://a)").failover


def test_failover_defaults_are_activemq_defaults():
    o = parse_url("failover:(tcp://a)").options
    assert o == FailoverOptions()
    assert (o.initial_reconnect_delay, o.max_reconnect_delay, o.use_exponential_backoff,
            o.backoff_multiplier, o.max_reconnect_attempts, o.startup_max_reconnect_attempts,
            o.randomize, o.timeout, o.track_messages, o.max_cache_size, o.priority_backup,
            o.reconnect_delay_jitter, o.startup_timeout) == (
        10, 30000, True, 2.0, -1, -1, True, -1, False, 131072, False, 0, -1)
    assert isinstance(o.backoff_multiplier, float)


def test_every_option_parsed():
    url = parse_url(
        "failover:(tcp://a:61613,tcp://b:61613)?initialReconnectDelay=100"
        "&maxReconnectDelay=5000&useExponentialBackOff=FALSE&backOffMultiplier=1.5"
        "&maxReconnectAttempts=7&startupMaxReconnectAttempts=3&randomize=False"
        "&timeout=2500&trackMessages=true&maxCacheSize=0&priorityBackup=TRUE"
        "&reconnectDelayJitter=50&startupTimeout=10000")
    assert url.endpoints == (A, B)
    assert url.options == FailoverOptions(
        initial_reconnect_delay=100, max_reconnect_delay=5000, use_exponential_backoff=False,
        backoff_multiplier=1.5, max_reconnect_attempts=7, startup_max_reconnect_attempts=3,
        randomize=False, timeout=2500, track_messages=True, max_cache_size=0,
        priority_backup=True, reconnect_delay_jitter=50, startup_timeout=10000)


def test_brief_example():
    url = parse_url(
        "failover:(tcp://a:61613,tcp://b:61613)?initialReconnectDelay=10"
        "&maxReconnectDelay=30000&useExponentialBackOff=true&backOffMultiplier=2"
        "&maxReconnectAttempts=-1&startupMaxReconnectAttempts=-1&randomize=true&timeout=-1")
    assert url == BrokerURL((A, B), True, FailoverOptions())
    assert isinstance(url.options.backoff_multiplier, float)


def test_boundary_values_accepted():
    o = parse_url("failover:(tcp://a)?initialReconnectDelay=0&maxReconnectDelay=0"
                  "&backOffMultiplier=1&maxReconnectAttempts=0&startupMaxReconnectAttempts=0"
                  "&timeout=0&startupTimeout=0&reconnectDelayJitter=0&maxCacheSize=0").options
    assert (o.initial_reconnect_delay, o.max_reconnect_delay, o.backoff_multiplier,
            o.max_reconnect_attempts, o.startup_max_reconnect_attempts, o.timeout,
            o.startup_timeout) == (0, 0, 1.0, 0, 0, 0, 0)
    assert parse_url("failover:(tcp://a)?backOffMultiplier=2.5e0").options.backoff_multiplier == 2.5


@pytest.mark.parametrize("text", [
    "failover:()", "failover:( )", "failover:", "failover:()?randomize=false",
    "failover:(tcp://a", "failover:tcp://a)", "failover:((tcp://a)", "failover:(tcp://a))",
    "failover:)tcp://a(", "failover:(tcp://a,)", "failover:(,tcp://a)",
    "failover:(tcp://a,,tcp://b)", "failover:tcp://a,", "failover:(tcp://a)x",
    "failover:(tcp://a)?randomize=false)", "failover:(failover:(tcp://a))",
    "failover:failover:tcp://a", "failover:(tcp://a,http://b)", "failover:(tcp://)",
    "failover:(tcp://a:bad)", "failover:x(tcp://a)", "failover:(tcp://a?x=1)",
    "failover:(tcp://a)#frag",
])
def test_bad_failover(text):
    with pytest.raises(URLError):
        parse_url(text)


def test_error_messages():
    with pytest.raises(URLError, match="empty failover list"):
        parse_url("failover:()")
    with pytest.raises(URLError, match="unbalanced parentheses"):
        parse_url("failover:(tcp://a,tcp://b")
    with pytest.raises(URLError, match="unbalanced parentheses"):
        parse_url("failover:tcp://a)")
    with pytest.raises(URLError, match="no host"):
        parse_url("tcp://:61613")
    with pytest.raises(URLError, match="invalid port 'x'"):
        parse_url("tcp://a:x")


def test_query_in_parenthesis_less_form_is_rejected_with_hint():
    # ActiveMQ gives that query to the last endpoint; we have no endpoint options.
    with pytest.raises(URLError, match=r"failover:\(\.\.\.\)\?name=value"):
        parse_url("failover:tcp://a,tcp://b?randomize=false")


def test_unknown_option_names_it_and_lists_valid_ones():
    with pytest.raises(URLError) as info:
        parse_url("failover:(tcp://a)?randomize=true&initialReconectDelay=5")
    msg = str(info.value)
    assert "'initialReconectDelay'" in msg
    for name in ("initialReconnectDelay", "maxReconnectDelay", "useExponentialBackOff",
                 "backOffMultiplier", "maxReconnectAttempts", "startupMaxReconnectAttempts",
                 "randomize", "timeout", "trackMessages", "maxCacheSize", "priorityBackup",
                 "reconnectDelayJitter", "startupTimeout"):
        assert name in msg


def test_option_names_are_case_sensitive():
    with pytest.raises(URLError, match="'RANDOMIZE'"):
        parse_url("failover:(tcp://a)?RANDOMIZE=true")


@pytest.mark.parametrize("query, fragment", [
    ("initialReconnectDelay=abc", "initialReconnectDelay='abc'"),
    ("initialReconnectDelay=1.5", "initialReconnectDelay='1.5'"),
    ("initialReconnectDelay=", "initialReconnectDelay=''"),
    ("initialReconnectDelay=-1", "initialReconnectDelay='-1'"),
    ("maxReconnectDelay=-5", "maxReconnectDelay='-5'"),
    ("reconnectDelayJitter=-1", "reconnectDelayJitter='-1'"),
    ("backOffMultiplier=0.5", "backOffMultiplier='0.5'"),
    ("backOffMultiplier=-2", "backOffMultiplier='-2'"),
    ("backOffMultiplier=two", "backOffMultiplier='two'"),
    ("backOffMultiplier=nan", "backOffMultiplier='nan'"),
    ("backOffMultiplier=inf", "backOffMultiplier='inf'"),
    ("maxReconnectAttempts=-2", "maxReconnectAttempts='-2'"),
    ("startupMaxReconnectAttempts=-10", "startupMaxReconnectAttempts='-10'"),
    ("maxReconnectAttempts=many", "maxReconnectAttempts='many'"),
    ("timeout=-2", "timeout='-2'"),
    ("startupTimeout=-3", "startupTimeout='-3'"),
    ("maxCacheSize=-1", "maxCacheSize='-1'"),
    ("maxCacheSize=1e6", "maxCacheSize='1e6'"),
    ("randomize=yes", "randomize='yes'"),
    ("randomize=1", "randomize='1'"),
    ("trackMessages=", "trackMessages=''"),
    ("priorityBackup=on", "priorityBackup='on'"),
    ("useExponentialBackOff=0", "useExponentialBackOff='0'"),
])
def test_bad_values_name_option_and_value(query, fragment):
    with pytest.raises(URLError) as info:
        parse_url("failover:(tcp://a)?" + query)
    assert fragment in str(info.value)


@pytest.mark.parametrize("query", [
    "randomize", "randomize=true&", "&randomize=true", "randomize=true&&timeout=1",
    "randomize=true&randomize=false",
])
def test_malformed_queries(query):
    with pytest.raises(URLError):
        parse_url("failover:(tcp://a)?" + query)


# ---------------------------------------------------------------- delays

def test_delay_sequence_default():
    assert delays_ms(FailoverOptions(), 15) == [
        10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 20480, 30000, 30000, 30000]


def test_delays_are_seconds_and_infinite():
    it = reconnect_delays(FailoverOptions())
    assert next(it) == pytest.approx(0.010)
    values = list(itertools.islice(it, 1000))
    assert values[-1] == 30.0 and len(values) == 1000


def test_delay_custom_multiplier_and_cap():
    o = FailoverOptions(initial_reconnect_delay=100, max_reconnect_delay=1000,
                        backoff_multiplier=1.5)
    assert delays_ms(o, 8) == [100, 150, 225, 337.5, 506.25, 759.375, 1000, 1000]


def test_delay_no_backoff():
    o = FailoverOptions(initial_reconnect_delay=250, use_exponential_backoff=False)
    assert delays_ms(o, 5) == [250] * 5


def test_delay_multiplier_one_is_constant():
    assert delays_ms(FailoverOptions(initial_reconnect_delay=7, backoff_multiplier=1.0), 4) == [7] * 4


def test_delay_initial_above_max_is_capped():
    o = FailoverOptions(initial_reconnect_delay=5000, max_reconnect_delay=1000)
    assert delays_ms(o, 3) == [1000, 1000, 1000]


def test_delay_zero():
    assert delays_ms(FailoverOptions(initial_reconnect_delay=0), 3) == [0, 0, 0]


def test_jitter_bounds_seeded():
    o = FailoverOptions(initial_reconnect_delay=10, max_reconnect_delay=640,
                        reconnect_delay_jitter=100)
    base = delays_ms(FailoverOptions(initial_reconnect_delay=10, max_reconnect_delay=640), 200)
    got = delays_ms(o, 200, random.Random(1234))
    extras = [g - b for g, b in zip(got, base)]
    assert all(0 <= e <= 100 for e in extras)
    assert max(extras) > 50 and min(extras) < 50  # actually spread, not constant
    assert got == delays_ms(o, 200, random.Random(1234))  # reproducible with a seed
    assert got != delays_ms(o, 200, random.Random(4321))


def test_no_jitter_does_not_consume_rng():
    class Boom:
        def uniform(self, a, b):
            raise AssertionError("rng used without jitter")
    assert delays_ms(FailoverOptions(), 3, Boom()) == [10, 20, 40]


def test_delays_from_parsed_url():
    o = parse_url("failover:(tcp://a)?initialReconnectDelay=1000&maxReconnectDelay=4000"
                  "&backOffMultiplier=3").options
    assert delays_ms(o, 4) == [1000, 3000, 4000, 4000]


# ---------------------------------------------------------------- attempt limits

@pytest.mark.parametrize("maximum, startup, connected_before, expected", [
    (-1, -1, False, None),
    (-1, -1, True, None),
    (5, -1, False, 5),        # startup -1: fall back to maxReconnectAttempts
    (5, -1, True, 5),
    (-1, 3, False, 3),        # startup limit only before the first connect
    (-1, 3, True, None),
    (5, 0, False, 0),         # 0 = one try, no retry
    (5, 0, True, 5),
    (0, -1, False, 0),
    (0, -1, True, 0),
    (0, 7, False, 7),
    (0, 7, True, 0),
])
def test_attempt_limit(maximum, startup, connected_before, expected):
    o = FailoverOptions(max_reconnect_attempts=maximum, startup_max_reconnect_attempts=startup)
    assert attempt_limit(o, connected_before) == expected


def test_attempt_limit_defaults_unlimited():
    o = parse_url("failover:(tcp://a,tcp://b)").options
    assert attempt_limit(o, False) is None
    assert attempt_limit(o, True) is None
