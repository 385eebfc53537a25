package ventanilla.peer;

import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;

import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.List;
import java.util.Locale;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

import org.w3c.dom.Node;

import com.helger.base.io.iface.IHasInputStream;
import com.helger.collection.commons.CommonsArrayList;
import com.helger.collection.commons.ICommonsList;
import com.helger.http.header.HttpHeaderMap;
import com.helger.mime.IMimeType;
import com.helger.phase4.attachment.IAS4IncomingAttachmentFactory;
import com.helger.phase4.attachment.WSS4JAttachment;
import com.helger.phase4.ebms3header.Ebms3SignalMessage;
import com.helger.phase4.ebms3header.Ebms3UserMessage;
import com.helger.phase4.error.AS4ErrorList;
import com.helger.phase4.incoming.AS4IncomingMessageMetadata;
import com.helger.phase4.incoming.AS4IncomingProfileSelectorConstant;
import com.helger.phase4.incoming.AS4IncomingReceiverConfiguration;
import com.helger.phase4.incoming.AS4RequestHandler;
import com.helger.phase4.incoming.IAS4IncomingMessageMetadata;
import com.helger.phase4.incoming.IAS4IncomingMessageState;
import com.helger.phase4.incoming.IAS4ResponseAbstraction;
import com.helger.phase4.incoming.crypto.AS4IncomingSecurityConfiguration;
import com.helger.phase4.incoming.spi.AS4MessageProcessorResult;
import com.helger.phase4.incoming.spi.AS4SignalMessageProcessorResult;
import com.helger.phase4.incoming.spi.IAS4IncomingMessageProcessorSPI;
import com.helger.phase4.model.pmode.resolve.AS4DefaultPModeResolver;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsServer;

import org.apache.wss4j.common.WSS4JConstants;

import com.helger.httpclient.HttpClientFactory;
import com.helger.httpclient.HttpClientManager;
import com.helger.httpclient.HttpClientSettings;
import com.helger.phase4.messaging.http.BasicHttpPoster;
import com.helger.phase4.messaging.http.IHttpPoster;
import org.apache.hc.client5.http.classic.methods.HttpPost;
import org.apache.hc.client5.http.io.HttpClientConnectionManager;
import org.apache.hc.client5.http.impl.io.PoolingHttpClientConnectionManager;
import org.apache.hc.client5.http.ssl.TlsSocketStrategy;
import org.apache.hc.core5.http.HttpEntity;
import org.apache.hc.core5.http.io.HttpClientResponseHandler;
import com.helger.phase4.CAS4;
import com.helger.phase4.attachment.AS4OutgoingAttachment;
import com.helger.phase4.crypto.AS4CryptoFactoryInMemoryKeyStore;
import com.helger.phase4.crypto.ECryptoAlgorithmCrypt;
import com.helger.phase4.crypto.ECryptoAlgorithmSign;
import com.helger.phase4.crypto.ECryptoAlgorithmSignDigest;
import com.helger.phase4.crypto.ECryptoKeyEncryptionAlgorithm;
import com.helger.phase4.crypto.ECryptoKeyIdentifierType;
import com.helger.phase4.model.EMEP;
import com.helger.phase4.model.EMEPBinding;
import com.helger.phase4.model.pmode.IPMode;
import com.helger.phase4.model.pmode.PMode;
import com.helger.phase4.model.pmode.PModeParty;
import com.helger.phase4.model.pmode.PModePayloadService;
import com.helger.phase4.model.pmode.PModeReceptionAwareness;
import com.helger.phase4.model.pmode.leg.EPModeSendReceiptReplyPattern;
import com.helger.phase4.model.pmode.leg.PModeLeg;
import com.helger.phase4.model.pmode.leg.PModeLegBusinessInformation;
import com.helger.phase4.model.pmode.leg.PModeLegErrorHandling;
import com.helger.phase4.model.pmode.leg.PModeLegProtocol;
import com.helger.phase4.model.pmode.leg.PModeLegSecurity;
import com.helger.phase4.mgr.MetaAS4Manager;
import com.helger.phase4.model.pmode.IPModeIDProvider;
import com.helger.phase4.profile.AS4Profile;
import com.helger.phase4.profile.IAS4ProfileValidator;
import com.helger.phase4.sender.AS4Sender;
import com.helger.phase4.sender.EAS4UserMessageSendResult;
import com.helger.servlet.mock.MockServletContext;
import com.helger.web.scope.mgr.WebScopeManager;
import com.helger.web.scope.mgr.WebScoped;

/**
 * Ventanilla's phase4 peer: sends one eDelivery AS4 1.15 user message (RSA-SHA256, RSA-OAEP
 * with MGF1-SHA256, AES-128-GCM, gzip) with phase4 and checks the signed receipt.
 *
 * <pre>
 * send --endpoint URL --key PEM --cert PEM --ca PEM --receiver-cert PEM --payload FILE
 *      --from ID --to ID --party-type URI --service S --action A --agreement AG
 *      --pmode-id ID --message-id ID [--variant ski|issuer-serial|uncompressed|unencrypted]
 * </pre>
 *
 * Prints "RESULT <phase4 result>" and exits 0 only on a verified receipt.
 */
public final class Phase4Peer
{
  private static final char [] PASSWORD = "peer".toCharArray ();
  private static final String PROFILE = "ventanilla-edelivery-1.15";

  private Phase4Peer ()
  {}

  private static X509Certificate cert (final String path) throws Exception
  {
    return (X509Certificate) CertificateFactory.getInstance ("X.509")
                                               .generateCertificate (new ByteArrayInputStream (Files.readAllBytes (Path.of (path))));
  }

  /** A PKCS#8 PEM key: RSA (message signing and encryption) or EC (the demo TLS keys). */
  private static PrivateKey key (final String path) throws Exception
  {
    final String pem = Files.readString (Path.of (path), StandardCharsets.US_ASCII);
    final String body = pem.replaceAll ("-----[A-Z ]+-----", "").replaceAll ("\\s", "");
    final PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec (Base64.getDecoder ().decode (body));
    for (final String algorithm : new String [] { "RSA", "EC", "Ed25519", "XDH" })
      try
      {
        return KeyFactory.getInstance (algorithm).generatePrivate (spec);
      }
      catch (final Exception notThisOne)
      {
        // try the next key type
      }
    throw new IllegalArgumentException (path + ": not an RSA, EC, Ed25519 or X25519 PKCS#8 key");
  }

  private static KeyStore keyStore (final String keyPath, final String certPath, final X509Certificate ca) throws Exception
  {
    final KeyStore ret = KeyStore.getInstance ("PKCS12");
    ret.load (null, null);
    ret.setKeyEntry ("key", key (keyPath), PASSWORD, new Certificate [] { cert (certPath), ca });
    return ret;
  }

  /** A one-way/push P-Mode with the eDelivery AS4 1.15 security of Ventanilla's link. */
  private static IPMode pmode (final Map <String, String> o)
  {
    final PModeParty from = new PModeParty (o.get ("party-type"), o.get ("from"), CAS4.DEFAULT_INITIATOR_URL, null, null);
    final PModeParty to = new PModeParty (o.get ("party-type"), o.get ("to"), CAS4.DEFAULT_RESPONDER_URL, null, null);
    final PModeLegSecurity security = new PModeLegSecurity ();
    security.setX509SignatureAlgorithm (signatureAlgorithm (o));
    security.setX509SignatureHashFunction (ECryptoAlgorithmSignDigest.DIGEST_SHA_256);
    if (!"unencrypted".equals (o.get ("variant")))
      security.setX509EncryptionAlgorithm (ECryptoAlgorithmCrypt.AES_128_GCM);
    security.setSendReceipt (true);
    security.setSendReceiptReplyPattern (EPModeSendReceiptReplyPattern.RESPONSE);
    security.setSendReceiptNonRepudiation (true);
    final PModeLegErrorHandling errors = PModeLegErrorHandling.createUndefined ();
    errors.setReportAsResponse (true);
    final PModeLeg leg = new PModeLeg (PModeLegProtocol.createForDefaultSoapVersion (o.get ("endpoint")),
                                       PModeLegBusinessInformation.create (o.get ("service"), o.get ("action"), null, CAS4.DEFAULT_MPC_ID),
                                       errors,
                                       null,
                                       security);
    return new PMode (o.get ("pmode-id"), from, to, o.get ("agreement"), EMEP.ONE_WAY, EMEPBinding.PUSH, leg, null,
                      (PModePayloadService) null, (PModeReceptionAwareness) null);
  }

  /**
   * receive --port N --tls-key PEM --tls-cert PEM --sign-key PEM --sign-cert PEM --enc-key PEM
   * --enc-cert PEM --ca PEM --out DIR (and the P-Mode options of send: from is the sender).
   * Prints "LISTENING port" then "RECEIVED message-id parts" per delivered message.
   */
  private static void receive (final Map <String, String> o) throws Exception
  {
    final X509Certificate ca = cert (o.get ("ca"));
    final KeyStore trust = KeyStore.getInstance ("PKCS12");
    trust.load (null, null);
    trust.setCertificateEntry ("ca", ca);
    final AS4CryptoFactoryInMemoryKeyStore signing = new AS4CryptoFactoryInMemoryKeyStore (keyStore (o.get ("sign-key"),
                                                                                                     o.get ("sign-cert"),
                                                                                                     ca),
                                                                                           "key",
                                                                                           PASSWORD,
                                                                                           trust);
    final AS4CryptoFactoryInMemoryKeyStore decrypting = new AS4CryptoFactoryInMemoryKeyStore (keyStore (o.get ("enc-key"),
                                                                                                        o.get ("enc-cert"),
                                                                                                        ca),
                                                                                              "key",
                                                                                              PASSWORD,
                                                                                              trust);
    final KeyManagerFactory kmf = KeyManagerFactory.getInstance (KeyManagerFactory.getDefaultAlgorithm ());
    kmf.init (keyStore (o.get ("tls-key"), o.get ("tls-cert"), ca), PASSWORD);
    final SSLContext tls = SSLContext.getInstance ("TLS");
    tls.init (kmf.getKeyManagers (), null, null);

    WebScopeManager.onGlobalBegin (MockServletContext.create ());
    registerProfile (pmode (o));
    final Path out = Path.of (o.get ("out"));
    Files.createDirectories (out);
    final IAS4IncomingMessageProcessorSPI deliver = new IAS4IncomingMessageProcessorSPI ()
    {
      public AS4MessageProcessorResult processAS4UserMessage (final IAS4IncomingMessageMetadata meta,
                                                              final HttpHeaderMap headers,
                                                              final Ebms3UserMessage message,
                                                              final IPMode mode,
                                                              final Node payload,
                                                              final ICommonsList <WSS4JAttachment> attachments,
                                                              final IAS4IncomingMessageState state,
                                                              final AS4ErrorList errors)
      {
        final String id = message.getMessageInfo ().getMessageId ();
        int n = 0;
        try
        {
          if (attachments != null)
            for (final WSS4JAttachment a : attachments)
              try (InputStream in = a.getSourceStream ())
              {
                Files.write (out.resolve (id + "." + (++n)), in.readAllBytes ());
              }
        }
        catch (final Exception ex)
        {
          return AS4MessageProcessorResult.createFailure ();
        }
        System.out.println ("RECEIVED " + id + " " + n);
        return AS4MessageProcessorResult.createSuccess ();
      }

      public AS4SignalMessageProcessorResult processAS4SignalMessage (final IAS4IncomingMessageMetadata meta,
                                                                      final HttpHeaderMap headers,
                                                                      final Ebms3SignalMessage signal,
                                                                      final IPMode mode,
                                                                      final IAS4IncomingMessageState state,
                                                                      final AS4ErrorList errors)
      {
        return AS4SignalMessageProcessorResult.createSuccess ();
      }

      public void processAS4ResponseMessage (final IAS4IncomingMessageMetadata meta,
                                             final IAS4IncomingMessageState state,
                                             final String responseMessageID,
                                             final byte [] response,
                                             final boolean responsePayloadIsAvailable,
                                             final AS4ErrorList errors)
      {}
    };

    final HttpsServer server = HttpsServer.create (new InetSocketAddress ("127.0.0.1", Integer.parseInt (o.getOrDefault ("port", "0"))), 0);
    server.setHttpsConfigurator (new HttpsConfigurator (tls));
    // Requests in parallel, as a servlet container would serve them (load runs send 32 at once).
    server.setExecutor (java.util.concurrent.Executors.newFixedThreadPool (Integer.parseInt (o.getOrDefault ("threads", "32"))));
    server.createContext ("/as4", exchange -> {
      try
      {
        answer (exchange, signing, decrypting, deliver);
      }
      catch (final Exception ex)
      {
        ex.printStackTrace ();
        exchange.sendResponseHeaders (500, -1);
      }
      finally
      {
        exchange.close ();
      }
    });
    server.start ();
    System.out.println ("LISTENING " + server.getAddress ().getPort ());
    System.out.flush ();
  }

  private static void answer (final HttpExchange exchange,
                              final AS4CryptoFactoryInMemoryKeyStore signing,
                              final AS4CryptoFactoryInMemoryKeyStore decrypting,
                              final IAS4IncomingMessageProcessorSPI deliver) throws Exception
  {
    final HttpHeaderMap headers = new HttpHeaderMap ();
    exchange.getRequestHeaders ().forEach ( (name, values) -> values.forEach (v -> headers.addHeader (name, v)));
    final int [] status = { 200 };
    final String [] mime = { "application/soap+xml" };
    final ByteArrayOutputStream body = new ByteArrayOutputStream ();
    final IAS4ResponseAbstraction response = new IAS4ResponseAbstraction ()
    {
      public void setContent (final byte [] bytes, final java.nio.charset.Charset charset)
      {
        body.writeBytes (bytes);
      }

      public void setContent (final HttpHeaderMap headerMap, final IHasInputStream content)
      {
        headerMap.forEachSingleHeader ( (n, v) -> exchange.getResponseHeaders ().add (n, v), true);
        try (InputStream in = content.getInputStream ())
        {
          body.writeBytes (in.readAllBytes ());
        }
        catch (final Exception ex)
        {
          throw new IllegalStateException (ex);
        }
      }

      public void setMimeType (final IMimeType mimeType)
      {
        mime[0] = mimeType.getAsString ();
      }

      public void setStatus (final int code)
      {
        status[0] = code;
      }
    };
    try (final WebScoped scope = new WebScoped ();
         final AS4RequestHandler handler = new AS4RequestHandler (AS4IncomingMessageMetadata.createForRequest ()))
    {
      handler.setCryptoFactorySign (signing);
      handler.setCryptoFactoryCrypt (decrypting);
      handler.setPModeResolver (new AS4DefaultPModeResolver (PROFILE));
      handler.setIncomingProfileSelector (new AS4IncomingProfileSelectorConstant (PROFILE, true));
      handler.setIncomingAttachmentFactory (IAS4IncomingAttachmentFactory.DEFAULT_INSTANCE);
      handler.setIncomingSecurityConfiguration (AS4IncomingSecurityConfiguration.createDefaultInstance ());
      handler.setIncomingReceiverConfiguration (new AS4IncomingReceiverConfiguration ());
      handler.setLocale (Locale.US);
      handler.setProcessorSupplier ( () -> new CommonsArrayList <> (deliver));
      handler.handleRequest (exchange.getRequestBody (), headers, response);
    }
    if (!exchange.getResponseHeaders ().containsKey ("Content-Type"))
      exchange.getResponseHeaders ().add ("Content-Type", mime[0]);
    final byte [] bytes = body.toByteArray ();
    exchange.sendResponseHeaders (status[0], bytes.length == 0 ? -1 : bytes.length);
    if (bytes.length > 0)
      try (OutputStream os = exchange.getResponseBody ())
      {
        os.write (bytes);
      }
  }

  /** `--profile edelivery-2.0`: Ed25519 signatures and X25519/HKDF key agreement. */
  private static boolean isEDelivery2 (final Map <String, String> o)
  {
    return "edelivery-2.0".equals (o.get ("profile"));
  }

  private static ECryptoAlgorithmSign signatureAlgorithm (final Map <String, String> o)
  {
    return isEDelivery2 (o) ? ECryptoAlgorithmSign.EDDSA_ED25519 : ECryptoAlgorithmSign.RSA_SHA_256;
  }

  private static ECryptoKeyIdentifierType signingKeyReference (final String variant)
  {
    switch (variant)
    {
      case "ski":
        return ECryptoKeyIdentifierType.SKI_KEY_IDENTIFIER;
      case "issuer-serial":
        return ECryptoKeyIdentifierType.ISSUER_SERIAL;
      default:
        return ECryptoKeyIdentifierType.BST_DIRECT_REFERENCE;
    }
  }

  private static AS4OutgoingAttachment.Builder payload (final Path path, final String variant) throws Exception
  {
    final AS4OutgoingAttachment.Builder ret = AS4OutgoingAttachment.builder ().data (Files.readAllBytes (path)).mimeTypeXML ();
    return "uncompressed".equals (variant) ? ret : ret.compressionGZIP ();
  }

  /**
   * phase4's eDelivery profile modules are not served here: a profile of our own, with no extra
   * validation, carries the link's P-Mode for sending and receiving.
   */
  private static void registerProfile (final IPMode pmode)
  {
    MetaAS4Manager.getProfileMgr ()
                  .registerProfile (new AS4Profile (PROFILE,
                                                    "eDelivery AS4 1.15 as Ventanilla's links use it",
                                                    () -> new IAS4ProfileValidator ()
                                                    {},
                                                    (i, r, a) -> (PMode) pmode,
                                                    IPModeIDProvider.DEFAULT_DYNAMIC,
                                                    false,
                                                    false));
  }

  private static Map <String, String> options (final String [] args)
  {
    final Map <String, String> ret = new HashMap <> ();
    for (int i = 1; i + 1 < args.length; i += 2)
      ret.put (args[i].replaceFirst ("^--", ""), args[i + 1]);
    return ret;
  }

  /**
   * phase4's poster with one HTTP client (and its connection pool, keep-alive) shared by every
   * message, instead of a client and a TLS connection per message as BasicHttpPoster makes: the
   * faster of phase4's two ways to send under load, which make bench compares against.
   */
  private static final class PooledHttpPoster extends BasicHttpPoster
  {
    private final HttpClientManager client;

    PooledHttpPoster (final SSLContext tls, final int connections)
    {
      client = new HttpClientManager (new HttpClientFactory (new HttpClientSettings ().setSSLContext (tls))
      {
        @Override
        public HttpClientConnectionManager createConnectionManager (final TlsSocketStrategy strategy)
        {
          final HttpClientConnectionManager manager = super.createConnectionManager (strategy);
          if (manager instanceof final PoolingHttpClientConnectionManager pool)
          {
            pool.setMaxTotal (connections);
            pool.setDefaultMaxPerRoute (connections);
          }
          return manager;
        }
      });
    }

    @Override
    public <T> T sendGenericMessage (final String url,
                                     final HttpHeaderMap headers,
                                     final HttpEntity entity,
                                     final HttpClientResponseHandler <? extends T> handler) throws java.io.IOException
    {
      final HttpPost post = new HttpPost (url);
      if (headers != null)
        headers.forEachSingleHeader (post::addHeader, true, isQuoteHttpHeaders ());
      post.setEntity (entity);
      return client.execute (post, handler);
    }
  }

  /**
   * One user message with phase4's default sender (a connection per message), or through
   * {@code pooled} when it is not null.
   */
  private static EAS4UserMessageSendResult sendOne (final Map <String, String> o,
                                                    final IPMode pmode,
                                                    final KeyStore keys,
                                                    final KeyStore trust,
                                                    final SSLContext tls,
                                                    final IHttpPoster pooled,
                                                    final String messageID,
                                                    final boolean printResponse) throws Exception
  {
    final String variant = o.getOrDefault ("variant", "");
    return AS4Sender.builderUserMessage ()
                    .as4ProfileID (PROFILE)
                    .pmode (pmode)
                    .httpClientFactory (new HttpClientSettings ().setSSLContext (tls))
                    .customHttpPoster (pooled)
                    .cryptoFactory (new AS4CryptoFactoryInMemoryKeyStore (keys, "sign", PASSWORD, trust))
                    .withSigningParams (p -> p.setKeyIdentifierType (signingKeyReference (variant))
                                              .setAlgorithmSign (signatureAlgorithm (o))
                                              .setAlgorithmSignDigest (ECryptoAlgorithmSignDigest.DIGEST_SHA_256))
                    .withCryptParams (p -> {
                      p.setAlgorithmCrypt (ECryptoAlgorithmCrypt.AES_128_GCM);
                      if (isEDelivery2 (o))
                        p.setEDelivery2KeyAgreementX25519 ();
                      else
                        p.setKeyEncAlgorithm (ECryptoKeyEncryptionAlgorithm.RSA_OAEP_XENC11)
                         .setMGFAlgorithm (WSS4JConstants.MGF_SHA256)
                         .setDigestAlgorithm (WSS4JConstants.SHA256);
                    })
                    .receiverCertificate ("unencrypted".equals (variant) ? null : cert (o.get ("receiver-cert")))
                    .fromPartyIDType (o.get ("party-type"))
                    .fromPartyID (o.get ("from"))
                    .fromRole (CAS4.DEFAULT_INITIATOR_URL)
                    .toPartyIDType (o.get ("party-type"))
                    .toPartyID (o.get ("to"))
                    .toRole (CAS4.DEFAULT_RESPONDER_URL)
                    .service (o.get ("service"))
                    .action (o.get ("action"))
                    .agreementRef (o.get ("agreement"))
                    .payload (payload (Path.of (o.get ("payload")), variant))
                    .endpointURL (o.get ("endpoint"))
                    .messageID (messageID)
                    .rawResponseConsumer (r -> {
                      if (printResponse)
                        System.out.println ("RESPONSE " + new String (r.getResponseContent (), StandardCharsets.UTF_8));
                    })
                    .sendMessageAndCheckForReceipt ();
  }

  /**
   * load ... --count N --warmup W --concurrency C [--pooled true]: W messages, then N measured,
   * C at a time, each with a fresh MessageId, with the default sender or one pooled HTTP
   * client. Prints "MEASURING" after the warm-up and then
   * "LOAD ok=K failed=F seconds=S cpu-seconds=T" (this process's CPU in the measured part).
   */
  private static int load (final Map <String, String> o,
                           final IPMode pmode,
                           final KeyStore keys,
                           final KeyStore trust,
                           final SSLContext tls) throws Exception
  {
    final int count = Integer.parseInt (o.getOrDefault ("count", "2000"));
    final int warmup = Integer.parseInt (o.getOrDefault ("warmup", "200"));
    final int concurrency = Integer.parseInt (o.getOrDefault ("concurrency", "32"));
    final java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool (concurrency);
    final IHttpPoster poster = "true".equals (o.get ("pooled")) ? new PooledHttpPoster (tls, concurrency) : null;
    final com.sun.management.OperatingSystemMXBean os = (com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean ();
    final java.util.concurrent.atomic.AtomicInteger ok = new java.util.concurrent.atomic.AtomicInteger ();
    final java.util.concurrent.atomic.AtomicInteger failed = new java.util.concurrent.atomic.AtomicInteger ();
    long started = 0;
    long cpuStarted = 0;
    for (final int n : new int [] { warmup, count })
    {
      if (n == count)
      {
        ok.set (0);
        failed.set (0);
        System.out.println ("MEASURING");
        System.out.flush ();
        started = System.nanoTime ();
        cpuStarted = os.getProcessCpuTime ();
      }
      final java.util.List <java.util.concurrent.Future <?>> tasks = new java.util.ArrayList <> ();
      for (int i = 0; i < n; i++)
        tasks.add (pool.submit ( () -> {
          try (final WebScoped scope = new WebScoped ())
          {
            final EAS4UserMessageSendResult r = sendOne (o, pmode, keys, trust, tls, poster, null, false);
            (r.isSuccess () ? ok : failed).incrementAndGet ();
          }
          catch (final Exception ex)
          {
            failed.incrementAndGet ();
          }
        }));
      for (final java.util.concurrent.Future <?> t : tasks)
        t.get ();
    }
    final double seconds = (System.nanoTime () - started) / 1e9;
    final double cpu = (os.getProcessCpuTime () - cpuStarted) / 1e9;
    pool.shutdown ();
    System.out.println ("LOAD ok=" + ok.get () + " failed=" + failed.get () + " seconds=" + seconds + " cpu-seconds=" + cpu);
    System.out.flush ();
    return failed.get () == 0 ? 0 : 1;
  }

  public static void main (final String [] args) throws Exception
  {
    // Ed25519 and X25519 in XML-DSig/XML-Enc come from BouncyCastle.
    java.security.Security.addProvider (new org.bouncycastle.jce.provider.BouncyCastleProvider ());
    if (args.length > 0 && "receive".equals (args[0]))
    {
      receive (options (args));
      return;
    }
    if (args.length == 0 || !("send".equals (args[0]) || "load".equals (args[0])))
    {
      System.err.println ("usage: send --endpoint URL --key PEM --cert PEM --ca PEM --receiver-cert PEM --payload FILE ...");
      System.exit (2);
    }
    final Map <String, String> o = options (args);
    final String variant = o.getOrDefault ("variant", "");
    final X509Certificate ca = cert (o.get ("ca"));

    final KeyStore keys = KeyStore.getInstance ("PKCS12");
    keys.load (null, null);
    keys.setKeyEntry ("sign", key (o.get ("key")), PASSWORD, new Certificate [] { cert (o.get ("cert")), ca });
    final KeyStore trust = KeyStore.getInstance ("PKCS12");
    trust.load (null, null);
    trust.setCertificateEntry ("ca", ca);

    final TrustManagerFactory tmf = TrustManagerFactory.getInstance (TrustManagerFactory.getDefaultAlgorithm ());
    tmf.init (trust);
    final SSLContext tls = SSLContext.getInstance ("TLS");
    tls.init (null, tmf.getTrustManagers (), null);

    WebScopeManager.onGlobalBegin (MockServletContext.create ());
    int exit = 1;
    try (final WebScoped scope = new WebScoped ())
    {
      final IPMode pmode = pmode (o);
      registerProfile (pmode);
      if ("load".equals (args[0]))
        exit = load (o, pmode, keys, trust, tls);
      else
      {
        final EAS4UserMessageSendResult result = sendOne (o, pmode, keys, trust, tls, null, o.get ("message-id"), true);
        System.out.println ("RESULT " + result);
        if (result.isSuccess ())
          exit = 0;
      }
    }
    finally
    {
      WebScopeManager.onGlobalEnd ();
    }
    System.exit (exit);
  }
}
