# frozen_string_literal: true

require "fileutils"
require "openssl"
require "securerandom"
require "tmpdir"

# Certificates made at test time with Ruby's OpenSSL: a CA, a server
# certificate for localhost and 127.0.0.1, client certificates, and a second
# CA that the servers do not trust. Written once per run as PEM files in a
# temporary directory (TestCerts.files), removed when the run ends.
module TestCerts
  # One generated CA: its key and certificate, and what it signs.
  class Authority
    attr_reader :key, :cert

    def initialize(name)
      @key = OpenSSL::PKey::EC.generate("prime256v1")
      @cert = TestCerts.certificate(name, @key, nil)
      extensions = OpenSSL::X509::ExtensionFactory.new(@cert, @cert)
      @cert.add_extension(extensions.create_extension("basicConstraints", "CA:TRUE", true))
      @cert.add_extension(extensions.create_extension("keyUsage", "keyCertSign,cRLSign", true))
      @cert.add_extension(extensions.create_extension("subjectKeyIdentifier", "hash"))
      @cert.sign(@key, "SHA256")
    end

    # [key, certificate] for a leaf signed by this CA: +usage+ "serverAuth"
    # or "clientAuth", +san+ a subjectAltName value or nil.
    def issue(name, usage, san: nil)
      key = OpenSSL::PKey::EC.generate("prime256v1")
      cert = TestCerts.certificate(name, key, @cert)
      extensions = OpenSSL::X509::ExtensionFactory.new(@cert, cert)
      cert.add_extension(extensions.create_extension("basicConstraints", "CA:FALSE", true))
      cert.add_extension(extensions.create_extension("keyUsage", "digitalSignature", true))
      cert.add_extension(extensions.create_extension("extendedKeyUsage", usage))
      cert.add_extension(extensions.create_extension("subjectAltName", san)) if san
      cert.add_extension(extensions.create_extension("authorityKeyIdentifier", "keyid:always"))
      cert.sign(@key, "SHA256")
      [key, cert]
    end
  end

  # An unsigned certificate of +name+ for the public half of +key+, valid
  # from an hour ago for a day, issued by +issuer_cert+ (nil: self-issued).
  def self.certificate(name, key, issuer_cert)
    cert = OpenSSL::X509::Certificate.new
    cert.version = 2
    cert.serial = OpenSSL::BN.new(SecureRandom.hex(8), 16)
    cert.subject = OpenSSL::X509::Name.parse("/CN=#{name}")
    cert.issuer = issuer_cert ? issuer_cert.subject : cert.subject
    cert.public_key = key
    cert.not_before = Time.now - 3600
    cert.not_after = Time.now + 86_400
    cert
  end

  # The paths of the generated PEM files, by name: ca, server_cert,
  # server_key, client_cert, client_key (signed by ca), other_ca,
  # other_client_cert, other_client_key (signed by a CA the servers do not
  # trust).
  def self.files
    @files ||= write(Dir.mktmpdir("kv-certs"))
  end

  def self.write(dir)
    Minitest.after_run { FileUtils.rm_rf(dir) }
    ca = Authority.new("kv test CA")
    other = Authority.new("kv other CA")
    pems = { ca: ca.cert.to_pem, other_ca: other.cert.to_pem }
    add_pair(pems, :server, ca.issue("kvserver", "serverAuth", san: "DNS:localhost,IP:127.0.0.1"))
    add_pair(pems, :client, ca.issue("kv client", "clientAuth"))
    add_pair(pems, :other_client, other.issue("kv stranger", "clientAuth"))
    pems.to_h do |name, pem|
      path = File.join(dir, "#{name}.pem")
      File.write(path, pem)
      [name, path]
    end
  end

  def self.add_pair(pems, name, (key, cert))
    pems[:"#{name}_cert"] = cert.to_pem
    pems[:"#{name}_key"] = key.private_to_pem
  end
end
