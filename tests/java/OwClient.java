// Scenarios for the OpenWire tests: ActiveMQ's own JMS client (activemq-client.jar) against a
// broker given by URL.  Each scenario prints what a user would check, one fact per line, and
// nothing that differs between brokers (no ids, no times), so that its output against
// pybrokerd can be compared with its output against ActiveMQ itself.
//
//   java OwClient <scenario> <broker-url> <destination-prefix> [args...]

import java.util.*;
import javax.jms.*;
import javax.jms.Queue;
import org.apache.activemq.ActiveMQConnectionFactory;
import org.apache.activemq.ActiveMQSession;

public class OwClient {
    static String url, prefix;
    static final long WAIT = 10000;

    public static void main(String[] argv) throws Exception {
        url = argv[1];
        prefix = argv[2];
        String[] rest = Arrays.copyOfRange(argv, 3, argv.length);
        try {
            switch (argv[0]) {
                case "types": types(); break;
                case "topic": topic(); break;
                case "nolocal": noLocal(); break;
                case "headers": headers(); break;
                case "acks": acks(); break;
                case "individual": individual(); break;
                case "tx": tx(); break;
                case "durable": durable(rest); break;
                case "requestreply": requestReply(); break;
                case "selector": selector(); break;
                case "prefetch0": prefetch0(); break;
                case "scheduled": scheduled(); break;
                case "send": send(rest); break;
                case "receive": receive(rest); break;
                case "stream": stream(rest); break;
                case "drain": drain(rest); break;
                case "badlogin": badLogin(rest); break;
                case "browse": browse(); break;
                case "denied": denied(rest); break;
                case "fill": fill(rest); break;
                case "rate": rate(rest); break;
                default: throw new IllegalArgumentException("no scenario " + argv[0]);
            }
        } catch (JMSException e) {
            System.out.println("JMSException " + e.getClass().getSimpleName() + ": " + e.getMessage());
            System.out.flush();
            System.exit(2);
        }
        System.out.flush();
        System.exit(0);
    }

    static Connection connect(String clientId) throws JMSException {
        ActiveMQConnectionFactory cf = new ActiveMQConnectionFactory(url);
        Connection c = cf.createConnection();
        if (clientId != null) c.setClientID(clientId);
        c.start();
        return c;
    }

    static void out(String line) { System.out.println(line); }

    static String describe(Message m) throws JMSException {
        StringBuilder b = new StringBuilder();
        if (m instanceof TextMessage) {
            b.append("text ").append(((TextMessage) m).getText());
        } else if (m instanceof BytesMessage) {
            BytesMessage bm = (BytesMessage) m;
            byte[] data = new byte[(int) bm.getBodyLength()];
            bm.readBytes(data);
            b.append("bytes ").append(hex(data));
        } else if (m instanceof MapMessage) {
            MapMessage mm = (MapMessage) m;
            TreeSet<String> names = new TreeSet<>();
            for (Enumeration<?> e = mm.getMapNames(); e.hasMoreElements();) names.add((String) e.nextElement());
            b.append("map");
            for (String n : names) {
                Object v = mm.getObject(n);
                b.append(' ').append(n).append('=').append(kind(v)).append(':').append(
                    v instanceof byte[] ? hex((byte[]) v) : String.valueOf(v));
            }
        } else {
            b.append("message");
        }
        return b.toString();
    }

    static String kind(Object v) {
        return v == null ? "null" : v.getClass().getSimpleName();
    }

    static String hex(byte[] data) {
        StringBuilder b = new StringBuilder();
        for (byte x : data) b.append(String.format("%02x", x));
        return b.toString();
    }

    static String props(Message m) throws JMSException {
        TreeSet<String> names = new TreeSet<>();
        for (Enumeration<?> e = m.getPropertyNames(); e.hasMoreElements();) {
            String n = (String) e.nextElement();
            if (!n.startsWith("JMSX") && !n.startsWith("JMS_")) names.add(n);
        }
        StringBuilder b = new StringBuilder();
        for (String n : names) {
            Object v = m.getObjectProperty(n);
            b.append(' ').append(n).append('=').append(kind(v)).append(':').append(v);
        }
        return b.toString();
    }

    // the texts of the n messages a consumer should get (each waited for as long as it takes,
    // so a slow broker does not cut the list short), then any more that come within 300 ms
    static String texts(MessageConsumer consumer, int n, boolean marks) throws JMSException {
        StringBuilder b = new StringBuilder();
        Message m;
        for (int i = 0; i < n; i++) {
            m = expect(consumer);
            b.append(' ').append(((TextMessage) m).getText()).append(marks && m.getJMSRedelivered() ? "(r)" : "");
        }
        while ((m = consumer.receive(300)) != null)
            b.append(' ').append(((TextMessage) m).getText()).append(marks && m.getJMSRedelivered() ? "(r)" : "");
        return b.toString();
    }

    static Message expect(MessageConsumer consumer) throws JMSException {
        Message m = consumer.receive(WAIT);
        if (m == null) throw new JMSException("nothing received within " + WAIT + " ms");
        return m;
    }

    // text, bytes, map and a plain message through a queue, persistent and not
    static void types() throws JMSException {
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue(prefix + ".types");
        MessageProducer p = s.createProducer(q);
        p.send(s.createTextMessage("hello \u00e9\u4e16"));
        BytesMessage bm = s.createBytesMessage();
        bm.writeBytes(new byte[] {0, 1, 2, (byte) 0xff, 10});
        p.send(bm);
        MapMessage mm = s.createMapMessage();
        mm.setString("name", "widget");
        mm.setInt("count", 3);
        mm.setLong("big", 1L << 40);
        mm.setBoolean("ok", true);
        mm.setDouble("price", 2.5);
        mm.setBytes("raw", new byte[] {1, 2, 3});
        p.send(mm);
        p.setDeliveryMode(DeliveryMode.NON_PERSISTENT);
        p.send(s.createMessage());
        p.send(s.createTextMessage(""));
        MessageConsumer consumer = s.createConsumer(q);
        for (int i = 0; i < 5; i++) {
            Message m = expect(consumer);
            out(describe(m) + " persistent=" + (m.getJMSDeliveryMode() == DeliveryMode.PERSISTENT));
        }
        out("more=" + (consumer.receive(300) != null));
        c.close();
    }

    // a topic, two subscribers: each gets every message, in order
    static void topic() throws JMSException {
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Topic t = s.createTopic(prefix + ".topic");
        MessageConsumer a = s.createConsumer(t), b = s.createConsumer(t);
        MessageProducer p = s.createProducer(t);
        for (int i = 0; i < 5; i++) p.send(s.createTextMessage("m" + i));
        StringBuilder la = new StringBuilder("a:"), lb = new StringBuilder("b:");
        for (int i = 0; i < 5; i++) {
            la.append(' ').append(((TextMessage) expect(a)).getText());
            lb.append(' ').append(((TextMessage) expect(b)).getText());
        }
        out(la.toString());
        out(lb.toString());
        c.close();
    }

    // a noLocal subscriber does not get what its own connection publishes
    static void noLocal() throws JMSException {
        Connection c = connect(null), other = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Session os = other.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Topic t = s.createTopic(prefix + ".nolocal");
        MessageConsumer local = s.createConsumer(t, null, true), all = s.createConsumer(t);
        s.createProducer(t).send(s.createTextMessage("own"));
        os.createProducer(t).send(os.createTextMessage("theirs"));
        out("all: " + ((TextMessage) expect(all)).getText() + " " + ((TextMessage) expect(all)).getText());
        out("noLocal: " + ((TextMessage) expect(local)).getText() + " more=" + (local.receive(300) != null));
        c.close();
        other.close();
    }

    // properties, priority, correlation id, type, reply-to, expiration
    static void headers() throws JMSException {
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue(prefix + ".headers");
        MessageProducer p = s.createProducer(q);
        TextMessage m = s.createTextMessage("with headers");
        m.setStringProperty("color", "red");
        m.setIntProperty("count", 7);
        m.setLongProperty("big", 1L << 40);
        m.setBooleanProperty("flag", true);
        m.setDoubleProperty("ratio", 0.25);
        m.setFloatProperty("f", 1.5f);
        m.setShortProperty("sh", (short) 12);
        m.setByteProperty("by", (byte) -3);
        m.setJMSCorrelationID("corr-1");
        m.setJMSType("kind-a");
        m.setJMSReplyTo(s.createQueue(prefix + ".replies"));
        p.send(m, DeliveryMode.PERSISTENT, 7, 60000);
        p.send(s.createTextMessage("low"), DeliveryMode.PERSISTENT, 1, 0);
        MessageConsumer consumer = s.createConsumer(q);
        Message r = expect(consumer);
        out(describe(r) + props(r));
        out("priority=" + r.getJMSPriority() + " correlation=" + r.getJMSCorrelationID()
            + " type=" + r.getJMSType() + " replyTo=" + r.getJMSReplyTo()
            + " expires=" + (r.getJMSExpiration() > System.currentTimeMillis())
            + " redelivered=" + r.getJMSRedelivered()
            + " destination=" + r.getJMSDestination()
            + " id=" + r.getJMSMessageID().startsWith("ID:"));
        Message low = expect(consumer);
        out(describe(low) + " priority=" + low.getJMSPriority() + " expiration=" + low.getJMSExpiration());
        c.close();
    }

    // CLIENT_ACKNOWLEDGE: recover redelivers the unacked; acknowledge() takes all delivered
    static void acks() throws JMSException {
        Connection c = connect(null);
        Session ps = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(prefix + ".acks");
        MessageProducer p = ps.createProducer(q);
        for (int i = 0; i < 4; i++) p.send(ps.createTextMessage("c" + i));
        Session s = c.createSession(false, Session.CLIENT_ACKNOWLEDGE);
        MessageConsumer consumer = s.createConsumer(q);
        Message m0 = expect(consumer), m1 = expect(consumer);
        out("got " + ((TextMessage) m0).getText() + " " + ((TextMessage) m1).getText());
        m1.acknowledge();  // acks c0 and c1
        Message m2 = expect(consumer);
        out("got " + ((TextMessage) m2).getText() + " redelivered=" + m2.getJMSRedelivered());
        s.recover();
        Message again = expect(consumer);
        out("after recover " + ((TextMessage) again).getText() + " redelivered=" + again.getJMSRedelivered());
        consumer.close();
        s.close();  // c2 and c3 unacked: back to the queue
        Session s2 = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer c2 = s2.createConsumer(q);
        out("left:" + texts(c2, 2, false));
        c.close();
    }

    // INDIVIDUAL_ACKNOWLEDGE: only the acked one goes
    static void individual() throws JMSException {
        Connection c = connect(null);
        Session ps = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = ps.createQueue(prefix + ".individual");
        MessageProducer p = ps.createProducer(q);
        for (int i = 0; i < 3; i++) p.send(ps.createTextMessage("i" + i));
        Session s = c.createSession(false, ActiveMQSession.INDIVIDUAL_ACKNOWLEDGE);
        MessageConsumer consumer = s.createConsumer(q);
        expect(consumer);
        Message second = expect(consumer);
        expect(consumer);
        second.acknowledge();
        out("acked " + ((TextMessage) second).getText());
        consumer.close();
        s.close();
        Session s2 = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer c2 = s2.createConsumer(q);
        out("left:" + texts(c2, 2, true));
        c.close();
    }

    // transacted sessions: sends and receives commit or roll back together
    static void tx() throws JMSException {
        Connection c = connect(null);
        Session s = c.createSession(true, Session.SESSION_TRANSACTED);
        Queue q = s.createQueue(prefix + ".tx");
        MessageProducer p = s.createProducer(q);
        p.send(s.createTextMessage("rolled back"));
        s.rollback();
        p.send(s.createTextMessage("t1"));
        p.send(s.createTextMessage("t2"));
        Session other = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer watcher = other.createConsumer(q);
        out("before commit visible=" + (watcher.receive(500) != null));
        watcher.close();
        s.commit();
        MessageConsumer consumer = s.createConsumer(q);
        Message a = expect(consumer);
        out("got " + ((TextMessage) a).getText() + " redelivered=" + a.getJMSRedelivered());
        s.rollback();
        Message again = expect(consumer);
        out("after rollback " + ((TextMessage) again).getText() + " redelivered=" + again.getJMSRedelivered());
        Message b = expect(consumer);
        out("got " + ((TextMessage) b).getText());
        s.commit();
        out("after commit more=" + (consumer.receive(500) != null));
        c.close();
    }

    // a durable topic subscriber: offline, back, unsubscribe
    static void durable(String[] args) throws JMSException {
        String clientId = args.length > 0 ? args[0] : prefix + "-client";
        Connection c = connect(clientId);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Topic t = s.createTopic(prefix + ".durable");
        TopicSubscriber sub = s.createDurableSubscriber(t, "sub1");
        MessageProducer p = s.createProducer(t);
        p.setDeliveryMode(DeliveryMode.PERSISTENT);
        p.send(s.createTextMessage("online"));
        out("online " + ((TextMessage) expect(sub)).getText());
        sub.close();
        for (int i = 0; i < 3; i++) p.send(s.createTextMessage("offline" + i));
        TopicSubscriber back = s.createDurableSubscriber(t, "sub1");
        StringBuilder b = new StringBuilder("back:");
        for (int i = 0; i < 3; i++) b.append(' ').append(((TextMessage) expect(back)).getText());
        out(b.toString());
        try {
            s.unsubscribe("sub1");
            out("unsubscribe while active: allowed");
        } catch (JMSException e) {
            out("unsubscribe while active: refused");
        }
        back.close();
        s.unsubscribe("sub1");
        p.send(s.createTextMessage("after unsubscribe"));
        TopicSubscriber fresh = s.createDurableSubscriber(t, "sub1");
        out("fresh subscription sees old=" + (fresh.receive(500) != null));
        fresh.close();
        s.unsubscribe("sub1");
        try {
            s.unsubscribe("sub1");
            out("unsubscribe unknown: allowed");
        } catch (InvalidDestinationException e) {
            out("unsubscribe unknown: InvalidDestinationException");
        } catch (JMSException e) {
            out("unsubscribe unknown: JMSException");
        }
        c.close();
    }

    // request/reply over a temporary queue
    static void requestReply() throws JMSException {
        Connection server = connect(null);
        Session ss = server.createSession(false, Session.AUTO_ACKNOWLEDGE);
        final Session replySession = server.createSession(false, Session.AUTO_ACKNOWLEDGE);
        final MessageProducer replier = replySession.createProducer(null);
        ss.createConsumer(ss.createQueue(prefix + ".service")).setMessageListener(m -> {
            try {
                TextMessage reply = replySession.createTextMessage("re: " + ((TextMessage) m).getText());
                reply.setJMSCorrelationID(m.getJMSCorrelationID());
                replier.send(m.getJMSReplyTo(), reply);
            } catch (JMSException e) {
                e.printStackTrace();
            }
        });
        Connection client = connect(null);
        Session cs = client.createSession(false, Session.AUTO_ACKNOWLEDGE);
        TemporaryQueue replies = cs.createTemporaryQueue();
        MessageConsumer rc = cs.createConsumer(replies);
        MessageProducer rp = cs.createProducer(cs.createQueue(prefix + ".service"));
        for (int i = 0; i < 3; i++) {
            TextMessage req = cs.createTextMessage("q" + i);
            req.setJMSReplyTo(replies);
            req.setJMSCorrelationID("c" + i);
            rp.send(req);
            Message r = expect(rc);
            out(((TextMessage) r).getText() + " correlation=" + r.getJMSCorrelationID()
                + " temp=" + (r.getJMSDestination() instanceof TemporaryQueue));
        }
        try {
            replies.delete();
            out("delete with a consumer: allowed");
        } catch (JMSException e) {
            out("delete with a consumer: refused");
        }
        rc.close();
        replies.delete();
        try {
            cs.createProducer(replies).send(cs.createTextMessage("to a deleted temp queue"));
            out("send to deleted temp queue: allowed");
        } catch (JMSException e) {
            out("send to deleted temp queue: refused");
        }
        client.close();
        server.close();
    }

    static void selector() throws JMSException {
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue(prefix + ".selector");
        MessageConsumer reds = s.createConsumer(q, "color = 'red' AND weight > 2");
        MessageProducer p = s.createProducer(q);
        String[] colors = {"red", "blue", "red", "red", "green"};
        int[] weights = {3, 5, 1, 9, 4};
        for (int i = 0; i < colors.length; i++) {
            TextMessage m = s.createTextMessage("s" + i);
            m.setStringProperty("color", colors[i]);
            m.setIntProperty("weight", weights[i]);
            p.send(m);
        }
        out("reds:" + texts(reds, 2, false));
        reds.close();
        MessageConsumer rest = s.createConsumer(q);
        out("rest:" + texts(rest, 3, false));
        try {
            s.createConsumer(q, "color = = 'x'");
            out("bad selector: accepted");
        } catch (InvalidSelectorException e) {
            out("bad selector: InvalidSelectorException");
        }
        c.close();
    }

    // prefetch 0: the consumer pulls one at a time
    static void prefetch0() throws JMSException {
        String u = url + (url.contains("?") ? "&" : "?") + "jms.prefetchPolicy.all=0";
        Connection c = new ActiveMQConnectionFactory(u).createConnection();
        c.start();
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue(prefix + ".pull");
        MessageConsumer a = s.createConsumer(q), b = s.createConsumer(q);
        out("empty receive(300)=" + (a.receive(300) != null));
        out("empty receiveNoWait=" + (a.receiveNoWait() != null));
        MessageProducer p = s.createProducer(q);
        for (int i = 0; i < 4; i++) p.send(s.createTextMessage("p" + i));
        out("a " + ((TextMessage) expect(a)).getText());
        out("b " + ((TextMessage) expect(b)).getText());
        out("a " + ((TextMessage) expect(a)).getText());
        out("b " + ((TextMessage) expect(b)).getText());
        out("a more=" + (a.receive(300) != null));
        c.close();
    }

    static void scheduled() throws JMSException {
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue(prefix + ".scheduled");
        MessageConsumer consumer = s.createConsumer(q);
        MessageProducer p = s.createProducer(q);
        TextMessage m = s.createTextMessage("later");
        m.setLongProperty("AMQ_SCHEDULED_DELAY", 1500);
        long sent = System.currentTimeMillis();
        p.send(m);
        out("within 1000 ms=" + (consumer.receive(1000) != null));
        Message r = expect(consumer);
        long took = System.currentTimeMillis() - sent;
        out("then " + ((TextMessage) r).getText() + " late enough=" + (took >= 1400)
            + " job id=" + (r.getStringProperty("scheduledJobId") != null));
        c.close();
    }

    // QueueBrowser: sees everything, takes nothing
    static void browse() throws JMSException {
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue(prefix + ".browse");
        MessageProducer p = s.createProducer(q);
        for (int i = 0; i < 3; i++) p.send(s.createTextMessage("b" + i));
        QueueBrowser browser = s.createBrowser(q);
        StringBuilder b = new StringBuilder("browsed:");
        for (Enumeration<?> e = browser.getEnumeration(); e.hasMoreElements();)
            b.append(' ').append(((TextMessage) e.nextElement()).getText());
        out(b.toString());
        browser.close();
        MessageConsumer consumer = s.createConsumer(q);
        out("consumed:" + texts(consumer, 3, false));
        c.close();
    }

    // send N text messages "<tag>-<i>" (persistent), print "sent N"
    static void send(String[] args) throws JMSException {
        String dest = args[0];
        int n = Integer.parseInt(args[1]);
        String tag = args.length > 2 ? args[2] : "m";
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer p = s.createProducer(dest.startsWith("topic://")
            ? s.createTopic(dest.substring(8)) : s.createQueue(dest.replace("queue://", "")));
        for (int i = 0; i < n; i++) {
            TextMessage m = s.createTextMessage(tag + "-" + i);
            m.setIntProperty("seq", i);
            p.send(m);
        }
        out("sent " + n);
        c.close();
    }

    // receive N messages and print each as "<kind> <body> <props>"
    static void receive(String[] args) throws JMSException {
        String dest = args[0];
        int n = Integer.parseInt(args[1]);
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageConsumer consumer = s.createConsumer(dest.startsWith("topic://")
            ? s.createTopic(dest.substring(8)) : s.createQueue(dest.replace("queue://", "")));
        if (args.length > 2) out("ready");
        System.out.flush();
        for (int i = 0; i < n; i++) {
            Message m = expect(consumer);
            out(describe(m) + props(m) + " persistent=" + (m.getJMSDeliveryMode() == DeliveryMode.PERSISTENT)
                + " priority=" + m.getJMSPriority()
                + (m.getJMSCorrelationID() != null ? " correlation=" + m.getJMSCorrelationID() : "")
                + (m.getJMSType() != null ? " type=" + m.getJMSType() : "")
                + (m.getJMSReplyTo() != null ? " replyTo=" + m.getJMSReplyTo() : ""));
        }
        c.close();
    }

    // a producer that keeps sending persistent messages "s-<i>" until N are sent, printing
    // "sent <i>" after each send returns (the broker has it); used across a failover
    static void stream(String[] args) throws JMSException {
        String dest = args[0];
        int n = Integer.parseInt(args[1]);
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer p = s.createProducer(s.createQueue(dest));
        p.setDeliveryMode(DeliveryMode.PERSISTENT);
        for (int i = 0; i < n; i++) {
            p.send(s.createTextMessage("s-" + i));
            out("sent " + i);
            System.out.flush();
        }
        out("done");
        c.close();
    }

    // a consumer that receives until N distinct messages came (or nothing for 20 s),
    // printing "got <body>" for every delivery, duplicates included
    static void drain(String[] args) throws JMSException {
        String dest = args[0];
        int n = Integer.parseInt(args[1]);
        Connection c = connect(null);
        Session s = c.createSession(false, Session.CLIENT_ACKNOWLEDGE);
        MessageConsumer consumer = s.createConsumer(s.createQueue(dest));
        out("ready");
        System.out.flush();
        Set<String> seen = new HashSet<>();
        while (seen.size() < n) {
            Message m = consumer.receive(20000);
            if (m == null) break;
            String body = ((TextMessage) m).getText();
            seen.add(body);
            out("got " + body);
            m.acknowledge();
            System.out.flush();
        }
        out("distinct " + seen.size());
        c.close();
    }

    // a user sends where it may not, then where it may, on the same connection
    static void denied(String[] args) throws JMSException {
        Connection c = new ActiveMQConnectionFactory(url).createConnection(args[0], args[1]);
        c.start();
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer p = s.createProducer(null);
        try {
            p.send(s.createQueue(args[2]), s.createTextMessage("forbidden"));
            out("send to " + args[2] + ": allowed");
        } catch (JMSSecurityException e) {
            out("send to " + args[2] + ": JMSSecurityException");
        }
        try {
            s.createConsumer(s.createQueue(args[2]));
            out("consume from " + args[2] + ": allowed");
        } catch (JMSSecurityException e) {
            out("consume from " + args[2] + ": JMSSecurityException");
        }
        p.send(s.createQueue(args[3]), s.createTextMessage("fine"));
        MessageConsumer consumer = s.createConsumer(s.createQueue(args[3]));
        out("then " + ((TextMessage) expect(consumer)).getText());
        c.close();
    }

    // persistent 1 KiB sends until the broker refuses one: how many got in, and the refusal
    static void fill(String[] args) throws JMSException {
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer p = s.createProducer(s.createQueue(args[0]));
        p.setDeliveryMode(DeliveryMode.PERSISTENT);
        char[] body = new char[1024];
        Arrays.fill(body, 'x');
        int sent = 0;
        try {
            for (; sent < 10000; sent++) {
                TextMessage m = s.createTextMessage(new String(body));
                m.setIntProperty("seq", sent);
                p.send(m);
            }
            out("never refused");
        } catch (JMSException e) {
            out("refused after " + sent + ": " + e.getClass().getSimpleName());
            out("reason: " + e.getMessage());
        }
        TemporaryQueue still = s.createTemporaryQueue();
        out("connection usable: " + (still != null));
        c.close();
    }

    // throughput (bench only, not in the tests): N messages of 1 KiB sent (persistent: each
    // send waits for the broker; or not), then received with auto-ack; prints msgs/s of each
    static void rate(String[] args) throws JMSException {
        int n = Integer.parseInt(args[0]);
        boolean persistent = args.length < 2 || args[1].equals("persistent");
        Connection c = connect(null);
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Queue q = s.createQueue(prefix + ".rate");
        MessageProducer p = s.createProducer(q);
        p.setDeliveryMode(persistent ? DeliveryMode.PERSISTENT : DeliveryMode.NON_PERSISTENT);
        char[] body = new char[1024];
        Arrays.fill(body, 'x');
        String text = new String(body);
        long t0 = System.nanoTime();
        for (int i = 0; i < n; i++) p.send(s.createTextMessage(text));
        long t1 = System.nanoTime();
        MessageConsumer consumer = s.createConsumer(q);
        for (int i = 0; i < n; i++) expect(consumer);
        long t2 = System.nanoTime();
        out(String.format("send %.0f msgs/s, receive %.0f msgs/s", n / ((t1 - t0) / 1e9),
                          n / ((t2 - t1) / 1e9)));
        c.close();
    }

    static void badLogin(String[] args) throws JMSException {
        ActiveMQConnectionFactory cf = new ActiveMQConnectionFactory(url);
        Connection c = cf.createConnection(args[0], args[1]);
        c.start();
        Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
        s.createProducer(s.createQueue(prefix + ".login")).send(s.createTextMessage("in"));
        out("connected");
        c.close();
    }
}
