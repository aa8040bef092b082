# frozen_string_literal: true

require "grpc"

# KeyValue::Credentials: how a Client proves who it is and whom it talks to
# (TLS, mutual TLS, a bearer token), checked before anything is sent.
module KeyValue
  # The TLS files and token of a Client, read and checked once:
  #
  # - tls: true: TLS, trusting the system's root certificates (for a server
  #   whose certificate a public CA signed); false: plaintext; nil (the
  #   default): TLS if ca_file or cert_file is given;
  # - ca_file: PEM certificates to trust for the server's certificate instead
  #   of the system's; with it (or with cert_file) the channel is TLS;
  # - cert_file, key_file: a PEM client certificate and its private key, for a
  #   server that requires mutual TLS (--tls-client-ca); both or neither;
  # - token: sent as "authorization: Bearer TOKEN" metadata on every call.
  #
  # Raises ArgumentError for a missing half of a certificate pair, a file that
  # cannot be read or is not PEM (naming the file), or a token that cannot be
  # sent as metadata.
  class Credentials
    # What a PEM file holds, by the option that names it.
    PEM_LABELS = { ca_file: "CERTIFICATE", cert_file: "CERTIFICATE", key_file: "PRIVATE KEY" }.freeze
    # A token is one header value: visible ASCII, no spaces.
    TOKEN_PATTERN = /\A[\x21-\x7e]+\z/
    private_constant :PEM_LABELS, :TOKEN_PATTERN

    # token: the bearer token or nil; metadata: what every call sends (a
    # frozen Hash, empty without a token).
    attr_reader :token, :metadata

    def initialize(token: nil, tls: nil, ca_file: nil, cert_file: nil, key_file: nil)
      if cert_file.nil? != key_file.nil?
        raise ArgumentError, "cert_file and key_file go together: #{cert_file ? 'key_file' : 'cert_file'} is missing"
      end

      @tls = choose_tls(tls, ca_file, cert_file)

      @token = check_token(token)
      @ca_pem = read_pem(:ca_file, ca_file)
      @cert_pem = read_pem(:cert_file, cert_file)
      @key_pem = read_pem(:key_file, key_file)
      @metadata = (@token ? { "authorization" => "Bearer #{@token}" } : {}).freeze
      freeze
    end

    def tls?
      @tls
    end

    def token?
      !@token.nil?
    end

    # The second argument of GRPC::Core::Channel.new: ChannelCredentials for
    # TLS (the system's trusted roots when there is no ca_file), else
    # :this_channel_is_insecure.
    def channel_credentials
      return :this_channel_is_insecure unless tls?

      GRPC::Core::ChannelCredentials.new(@ca_pem, @key_pem, @cert_pem)
    end

    def inspect
      "#<#{self.class.name} tls=#{tls?} client_cert=#{!@cert_pem.nil?} token=#{token? ? '[hidden]' : 'none'}>"
    end

    private

    # Whether the channel is TLS: as +tls+ says, or (nil) if there are files
    # for it. Raises ArgumentError for options that contradict each other.
    def choose_tls(tls, ca_file, cert_file)
      raise ArgumentError, "tls must be true, false or nil, got #{tls.inspect}" unless [nil, true, false].include?(tls)

      file = ca_file ? "ca_file" : cert_file && "cert_file"
      raise ArgumentError, "tls: false contradicts #{file}, which is for TLS" if tls == false && file

      tls.nil? ? !file.nil? : tls
    end

    def check_token(token)
      return nil if token.nil?
      raise ArgumentError, "token must be a String, got #{token.class}" unless token.is_a?(String)
      raise ArgumentError, "token must be non-empty printable ASCII without spaces" unless token.match?(TOKEN_PATTERN)

      token.dup.freeze
    end

    def read_pem(option, path)
      return nil if path.nil?

      text = File.binread(path.to_s)
      label = PEM_LABELS.fetch(option)
      unless text.match?(/-----BEGIN [A-Z ]*#{label}-----/)
        raise ArgumentError, "#{option} #{path} is not a PEM file (no #{label} in it)"
      end

      text
    rescue SystemCallError, IOError => e
      raise ArgumentError, "cannot read #{option} #{path}: #{e.message.sub(/ @ \w+ - .*\z/, '')}"
    end
  end
end
