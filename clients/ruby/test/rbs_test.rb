# frozen_string_literal: true

require "rbs"
require "test_helper"

# sig/keyvalue.rbs: its types resolve (as `rbs validate` checks them, with
# the rbs library Ruby bundles), and it names exactly the public methods of
# the classes it covers, so a method added or renamed without its
# signature fails here.
class RBSTest < Minitest::Test
  SIG = File.expand_path("../sig", __dir__)
  COVERED = %w[Client Watch KeptLease RetryPolicy Snapshot].freeze

  def test_the_signatures_resolve_and_name_every_public_method_and_no_other
    loader = RBS::EnvironmentLoader.new
    loader.add(path: Pathname(SIG))
    env = RBS::Environment.from_loader(loader).resolve_type_names
    builder = RBS::DefinitionBuilder.new(env:)
    validator = RBS::Validator.new(env:, resolver: RBS::TypeNameResolver.from_env(env))
    ours = env.class_decls.keys.select { |name| name.to_s.start_with?("::KeyValue::") }
    assert_operator ours.size, :>=, 20
    ours.each do |name|
      [builder.build_instance(name), builder.build_singleton(name)].each do |definition|
        definition.methods.each_value do |method|
          method.method_types.each { |type| type.each_type { |t| validator.validate_type(t, context: nil) } }
        end
      end
    end
    COVERED.each { |name| assert_same_methods(builder, name) }
  end

  private

  def assert_same_methods(builder, name)
    klass = KeyValue.const_get(name)
    type = RBS::TypeName.new(name: name.to_sym, namespace: RBS::Namespace.parse("::KeyValue"))
    methods = builder.build_instance(type).methods
    declared = methods.select { |_, method| method.defined_in.to_s.start_with?("::KeyValue") }.keys
    defined = klass.public_instance_methods.select do |m|
      klass.instance_method(m).owner.name.to_s.start_with?("KeyValue")
    end
    assert_equal (defined - %i[inspect]).sort, (declared - %i[initialize]).sort, name
  end
end
